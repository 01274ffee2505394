"""Following a batch: counts per state, spend, and paging through its jobs with cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.wakeup import Topic
from tests.fixtures.api import Api, RecordingWakeup, png, running_api, succeeded
from tests.fixtures.segflow import Starter

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


STATES = [
    "queued",
    "submitting",
    "unknown",
    "submitted",
    "fetching",
    "succeeded",
    "failed",
    "cancelled",
    "expired",
]


async def test_batch_counts_every_state_and_what_is_done(api: Api) -> None:
    api.services.wakeup = wakeup = RecordingWakeup()
    created = await api.submit(
        body={
            "items": [{"image": "https://e.com/a.png", "prompt": str(i)} for i in range(3)],
            "callback_url": "https://hooks.example.com/segflow",
        }
    )
    assert wakeup.topics == [Topic.SUBMIT]
    jobs = [j["job_id"] for j in created["jobs"]]
    await api.call("POST", f"/v1/jobs/{jobs[0]}/cancel")
    await succeeded(api.services, jobs[1], png())
    batch = (await api.call("GET", f"/v1/batches/{created['batch_id']}")).body
    assert list(batch["counts"]) == STATES
    assert {s: n for s, n in batch["counts"].items() if n} == {"queued": 1, "cancelled": 1, "succeeded": 1}
    assert (batch["total"], batch["done"], batch["spend_usd"]) == (3, 2, 0.001)
    assert batch["callback_url"] == "https://hooks.example.com/segflow"
    assert batch["created_at"].endswith("Z")


async def test_jobs_page_through_with_cursors_in_submission_order(api: Api) -> None:
    created = await api.submit(n=5)
    url = f"/v1/batches/{created['batch_id']}/jobs?limit=2"
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        page = (await api.call("GET", url + (f"&cursor={cursor}" if cursor else ""))).body
        seen += [j["job_id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [j["job_id"] for j in created["jobs"]]


async def test_jobs_filter_by_state(api: Api) -> None:
    created = await api.submit(n=4)
    cancelled = created["jobs"][2]["job_id"]
    await api.call("POST", f"/v1/jobs/{cancelled}/cancel")
    page = (await api.call("GET", f"/v1/batches/{created['batch_id']}/jobs?state=cancelled")).body
    assert [j["job_id"] for j in page["jobs"]] == [cancelled]
    assert page["next_cursor"] is None
    queued = (await api.call("GET", f"/v1/batches/{created['batch_id']}/jobs?state=queued&limit=3")).body
    assert len(queued["jobs"]) == 3 and queued["next_cursor"] is None


async def test_succeeded_job_in_a_listing_points_at_its_mask(api: Api) -> None:
    created = await api.submit(n=1)
    job_id = created["jobs"][0]["job_id"]
    await succeeded(api.services, job_id, png())
    page = (await api.call("GET", f"/v1/batches/{created['batch_id']}/jobs")).body
    assert page["jobs"][0]["mask_url"] == f"/v1/jobs/{job_id}/mask"


@pytest.mark.parametrize(
    ("query", "path", "status"),
    [
        ("limit=0", "limit", 422),
        ("limit=501", "limit", 422),
        ("limit=x", "limit", 422),
        ("state=done", "state", 422),
        ("cursor=nonsense", "cursor", 400),  # not sent back as given: a bad request, not a bad value
    ],
)
async def test_bad_listing_parameters_are_refused(api: Api, query: str, path: str, status: int) -> None:
    created = await api.submit(n=1)
    answer = await api.call("GET", f"/v1/batches/{created['batch_id']}/jobs?{query}")
    assert (answer.status, answer.paths) == (status, [path])


async def test_unknown_batch_is_not_found(api: Api) -> None:
    for path in ["/v1/batches/nope", "/v1/batches/nope/jobs"]:
        answer = await api.call("GET", path)
        assert (answer.status, answer.error) == (404, "not_found")
