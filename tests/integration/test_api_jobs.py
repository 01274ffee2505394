"""Reading, cancelling and retrying jobs and fetching masks over real HTTP on a real SQLite file;
jobs are moved through the real state machine, as the workers would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from service.completion import apply_snapshot
from service.jobs import Change
from service.states import Event, State
from service.upstream.client import CancelAnswer
from service.upstream.wire import decode_task
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


async def test_cancel_of_a_submitted_job_is_503_while_the_upstream_cannot_be_asked(api: Api) -> None:
    job_id = await one_job(api)
    await submitted(api.services, job_id)  # the api fixture's upstream is a closed port
    answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.error) == (503, "upstream_unavailable")
    assert answer.body["detail"][0]["state"] == "submitted"
    job = await api.services.store.get_job(job_id)
    assert job is not None and job.state is State.SUBMITTED and job.error_code is None  # it keeps running


class Upstream:
    """Answers cancels as told, after running `meanwhile` (what else happens during the call)."""

    def __init__(self, answer: CancelAnswer, meanwhile: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.answer = answer
        self.meanwhile = meanwhile
        self.asked: list[str] = []

    async def cancel_task(self, task_id: str) -> CancelAnswer:
        self.asked.append(task_id)
        if self.meanwhile is not None:
            await self.meanwhile(task_id)
        return self.answer


@contextlib.contextmanager
def upstream_as(api: Api, fake: Upstream) -> Iterator[Upstream]:
    real, api.services.upstream = api.services.upstream, fake  # type: ignore[assignment]
    try:
        yield fake
    finally:
        api.services.upstream = real


async def test_cancel_of_a_pending_task_stops_it_upstream_and_ends_the_job_cancelled(api: Api) -> None:
    job_id = await one_job(api)
    _, task_id = await submitted(api.services, job_id)
    with upstream_as(api, Upstream(CancelAnswer(True, f"task {task_id} canceled"))) as fake:
        answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.body["state"]) == (200, "cancelled")
    assert fake.asked == [task_id]


async def test_cancel_refused_upstream_is_409_with_the_reason_and_the_job_keeps_running(api: Api) -> None:
    job_id = await one_job(api)
    _, task_id = await submitted(api.services, job_id)
    reason = f"task {task_id} is processing and can no longer be canceled"
    with upstream_as(api, Upstream(CancelAnswer(False, reason))):
        answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.error) == (409, "upstream_refused")
    assert answer.body["detail"] == [{"state": "submitted", "reason": reason}]
    assert reason in answer.body["message"]
    job = await api.services.store.get_job(job_id)
    assert job is not None and job.state is State.SUBMITTED and job.error_code is None
    timeline = (await api.call("GET", f"/v1/jobs/{job_id}")).body["timeline"]
    notes = [(e["event"], (e.get("detail") or {}).get("reason")) for e in timeline]
    assert notes[-2:] == [("cancel_requested", None), ("cancel_refused", reason)]  # the refusal is on record


async def test_the_cancelled_webhook_racing_segflows_own_cancel_ends_the_job_cancelled(api: Api) -> None:
    job_id = await one_job(api)
    _, task_id = await submitted(api.services, job_id)

    async def webhook_first(tid: str) -> None:
        assert tid == task_id
        segment = {"model": "Qubico/image-toolkit", "task_type": "segment"}
        snap = decode_task({"task_id": tid, **segment, "status": "canceled"})
        await apply_snapshot(api.services, job_id, snap, attempt=1, source="webhook")

    with upstream_as(api, Upstream(CancelAnswer(True, "canceled"), webhook_first)):
        answer = await api.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert (answer.status, answer.body["state"], answer.body["error"]) == (200, "cancelled", None)
    assert answer.body["timeline"][-1]["source"] == "webhook"  # the snapshot's cancel, not a failure


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
