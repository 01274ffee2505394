"""Reading, cancelling and retrying jobs and fetching masks over real HTTP on a real SQLite file;
jobs are moved through the real state machine, as the workers would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.states import Event
from service.store.base import Change
from service.wakeup import Topic
from service.webhook_secrets import MAX_ATTEMPTS_VERIFIED
from tests.fixtures.api import Api, RecordingWakeup, failed, png, running_api, step, submitted, succeeded
from tests.fixtures.segflow import Starter

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


async def one_job(api: Api) -> str:
    created = await api.submit(n=1)
    job_id: str = created["jobs"][0]["job_id"]
    return job_id


async def test_new_job_reads_back_with_its_request_and_timeline(api: Api) -> None:
    job_id = await one_job(api)
    job = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    assert (job["state"], job["attempt"], job["attempts"], job["artifact"], job["error"]) == (
        "queued",
        1,
        [],
        None,
        None,
    )
    assert [(e["event"], e["from"], e["to"], e["source"]) for e in job["timeline"]] == [
        ("accepted", None, "queued", "api")
    ]
    assert job["created_at"].endswith("Z") and job["finished_at"] is None


async def test_submitted_job_lists_its_upstream_attempt(api: Api) -> None:
    job_id = await one_job(api)
    _, task_id = await submitted(api.services, job_id)
    job = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    assert job["state"] == "submitted"
    assert [(a["attempt"], a["task_id"], a["origin"], a["status"]) for a in job["attempts"]] == [
        (1, task_id, "created", "pending")
    ]


async def test_cancel_of_a_queued_job_ends_it_once(api: Api) -> None:
    job_id = await one_job(api)
    answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.body["state"]) == (200, "cancelled")
    assert answer.body["finished_at"] is not None
    last = answer.body["timeline"][-1]
    assert (last["event"], last["from"], last["to"], last["source"]) == (
        "cancel",
        "queued",
        "cancelled",
        "api",
    )
    again = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (again.status, again.error) == (409, "not_cancellable")
    assert again.body["detail"] == [{"state": "cancelled"}]


async def test_cancel_of_a_submitted_job_answers_even_though_the_upstream_is_down(api: Api) -> None:
    job_id = await one_job(api)
    await submitted(api.services, job_id)
    answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.body["state"]) == (200, "cancelled")


async def test_cancel_of_a_submitted_job_asks_the_upstream_to_stop_its_task(api: Api) -> None:
    job_id = await one_job(api)
    _, task_id = await submitted(api.services, job_id)
    asked: asyncio.Queue[str] = asyncio.Queue()

    class Upstream:
        async def cancel_task(self, task_id: str) -> bool:
            asked.put_nowait(task_id)
            return True

    real, api.services.upstream = api.services.upstream, Upstream()  # type: ignore[assignment]
    try:
        answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
        assert answer.status == 200
        assert await asyncio.wait_for(asked.get(), timeout=5) == task_id
    finally:
        api.services.upstream = real


async def test_job_fetching_its_mask_cannot_be_cancelled(api: Api) -> None:
    job_id = await one_job(api)
    await submitted(api.services, job_id)
    await step(api.services, job_id, Change(Event.COMPLETED, "test", set={"output_urls": ("https://x/y.png",)}))
    answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.error, answer.body["detail"]) == (
        409,
        "not_cancellable",
        [{"state": "fetching"}],
    )


async def test_retry_of_a_failed_job_queues_a_fresh_attempt(api: Api) -> None:
    job_id = await one_job(api)
    await failed(api.services, job_id)
    before = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    assert before["error"] == {"code": "rejected", "message": "bad image"}
    api.services.wakeup = wakeup = RecordingWakeup()
    answer = await api.call("POST", f"/v1/jobs/{job_id}/retry")
    assert answer.status == 200
    job = answer.body
    assert (job["state"], job["attempt"], job["error"], job["finished_at"]) == ("queued", 2, None, None)
    assert job["timeline"][-1]["event"] == "retry"
    assert wakeup.topics == [Topic.SUBMIT]  # the submitter need not wait for its next round
    stored = await api.services.store.get_job(job_id)
    assert stored is not None and stored.task_id is None and stored.submit_tries == 0


async def test_retry_of_a_job_that_has_not_failed_is_refused(api: Api) -> None:
    job_id = await one_job(api)
    answer = await api.call("POST", f"/v1/jobs/{job_id}/retry")
    assert (answer.status, answer.error, answer.body["detail"]) == (
        409,
        "not_retryable",
        [{"state": "queued"}],
    )


async def test_retry_past_the_last_verifiable_attempt_is_refused(api: Api) -> None:
    job_id = await one_job(api)
    await failed(api.services, job_id, attempt=MAX_ATTEMPTS_VERIFIED)
    answer = await api.call("POST", f"/v1/jobs/{job_id}/retry")
    assert (answer.status, answer.error) == (409, "retry_limit")
    stored = await api.services.store.get_job(job_id)
    assert stored is not None and stored.state.value == "failed"


async def test_mask_is_not_found_until_stored_then_served(api: Api) -> None:
    job_id = await one_job(api)
    early = await api.call("GET", f"/v1/jobs/{job_id}/mask")
    assert (early.status, early.error, early.body["detail"]) == (404, "mask_not_ready", [{"state": "queued"}])
    mask = png(2, 1)
    await succeeded(api.services, job_id, mask)
    answer = await api.call("GET", f"/v1/jobs/{job_id}/mask")
    assert (answer.status, answer.headers["content-type"], answer.raw) == (200, "image/png", mask)
    job = (await api.call("GET", f"/v1/jobs/{job_id}")).body
    assert job["state"] == "succeeded" and job["price_usd"] == 0.001
    assert job["artifact"] == {
        "sha256": job["artifact"]["sha256"],
        "bytes": len(mask),
        "width": 2,
        "height": 1,
        "url": f"/v1/jobs/{job_id}/mask",
        "download_url": job["artifact"]["download_url"],
        "pruned_at": None,
    }
    assert job["artifact"]["download_url"].startswith(f"{api.services.settings.public_url}/links/masks/{job_id}/0.png?")
    assert "artifacts" not in job


async def test_events_route_answers_the_timeline(api: Api) -> None:
    job_id = await one_job(api)
    await failed(api.services, job_id)
    answer = await api.call("GET", f"/v1/jobs/{job_id}/events")
    assert [(e["event"], e["to"]) for e in answer.body["timeline"]] == [
        ("accepted", "queued"),
        ("claim", "submitting"),
        ("rejected", "failed"),
    ]


async def test_unknown_job_is_not_found(api: Api) -> None:
    for method, path in [
        ("GET", ""),
        ("GET", "/mask"),
        ("GET", "/events"),
        ("POST", "/cancel"),
        ("POST", "/retry"),
    ]:
        answer = await api.call(method, f"/v1/jobs/no-such-job{path}")
        assert (answer.status, answer.error) == (404, "not_found"), path
