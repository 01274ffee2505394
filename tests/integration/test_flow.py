"""segflow end to end in one process: the REST API, the workers and the webhook receiver on real
ports, the sandbox as upstream, a real store; faults on, one at a time and all together."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from service.fetcher import Fetcher
from service.invariants import Report, check_run
from service.sandbox.settings import FaultSettings
from service.states import State
from service.submitter import Submitter
from tests.fixtures.sandbox import RunningSandbox, wait_until
from tests.fixtures.segflow import RunningSegflow

SAMPLES = ("street.jpg", "portrait.jpg", "shapes.png")


async def submit(sf: RunningSegflow, sb: RunningSandbox, n: int) -> tuple[str, list[str]]:
    items = [
        {"image": sb.sample_url(SAMPLES[i % 3]), "prompt": f"thing {i}", "segment_factor": i % 7 - 3} for i in range(n)
    ]
    answer = await sf.client.create_batch(items)
    return answer["batch_id"], [j["job_id"] for j in answer["jobs"]]


async def wait_done(sf: RunningSegflow, batch_id: str, timeout_s: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        summary: dict[str, Any] = await sf.client.get_batch(batch_id)
        if summary["done"] == summary["total"]:
            return summary
        if loop.time() > deadline:
            raise AssertionError(f"batch not done after {timeout_s} s: {summary['counts']}")
        await asyncio.sleep(0.1)


async def sandbox_tasks(sb: RunningSandbox) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{sb.url}/_sandbox/tasks") as resp:
        body = await resp.json()
    return list(body)


async def run(sf: RunningSegflow, sb: RunningSandbox, n: int, timeout_s: float = 60) -> tuple[dict[str, Any], Report]:
    batch_id, job_ids = await submit(sf, sb, n)
    summary = await wait_done(sf, batch_id, timeout_s)
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok, report.violations[:10]
    return summary, report


async def test_batch_of_200_jobs_all_succeed_with_the_sandboxs_masks(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    summary, report = await run(sf, sb, 200)
    assert summary["counts"]["succeeded"] == 200
    assert report.masks_checked == 200
    assert report.duplicate_paid_tasks == 0
    assert summary["spend_usd"] == pytest.approx(2.0)  # 640x480 images: $0.01 each


FAULTS: dict[str, FaultSettings] = {
    "webhook_drop": FaultSettings(webhook_drop=0.5),
    "webhook_duplicate": FaultSettings(webhook_duplicate=0.5),
    "webhook_delay": FaultSettings(webhook_delay=0.5, webhook_delay_s=0.5),
    "webhook_reorder": FaultSettings(webhook_reorder=0.5),
    "create_5xx": FaultSettings(create_5xx=0.3),
    "create_lost": FaultSettings(create_lost=0.3),
    "create_hold": FaultSettings(create_hold=0.3, create_hold_s=3.0),
    "burst_429": FaultSettings(burst_429=0.1, burst_429_length=3, burst_429_retry_after_s=0.2),
    "task_fail_retryable": FaultSettings(task_fail_retryable=0.3),
    "get_5xx": FaultSettings(get_5xx=0.5, webhook_drop=0.5),
}
ALL = FaultSettings(
    webhook_drop=0.3,
    webhook_duplicate=0.2,
    webhook_delay=0.2,
    webhook_delay_s=0.5,
    webhook_reorder=0.2,
    create_5xx=0.1,
    create_lost=0.1,
    create_hold=0.05,
    create_hold_s=3.0,
    burst_429=0.05,
    burst_429_length=3,
    burst_429_retry_after_s=0.2,
    task_fail_retryable=0.1,
    get_5xx=0.2,
)


@pytest.mark.parametrize("fault", [*FAULTS, "all"])
async def test_every_job_ends_once_under_faults(sandbox: Any, segflow: Any, fault: str) -> None:
    faults = ALL if fault == "all" else FAULTS[fault]
    sb = await sandbox(faults=faults, seed=11, latency_min_s=0.05, latency_max_s=0.3)
    sf = await segflow(sb.url, max_attempts=5)
    summary, report = await run(sf, sb, 60, timeout_s=90)
    assert summary["counts"]["succeeded"] == 60, summary["counts"]
    stats = sb.engine.stats_json()
    assert stats["faults"][fault if fault != "all" else "webhook_drop"] > 0  # the fault did happen
    flow = await sf.store.flow_counts()
    if faults.webhook_drop:
        assert flow["completed_by_poll"] > 0  # lost webhooks were recovered by polling
    if faults.create_lost:
        # Answers cut after the task was made: the job waits in `unknown` until a webhook adopts it.
        # (A held answer usually loses the race to the task's first webhook, which adopts it even
        # before the create call gives up; either way nothing is paid twice, checked above.)
        assert flow["ambiguous_creates"] > 0
        assert flow["tasks_adopted"] > 0
    assert report.duplicate_paid_tasks <= report.resends_after_adoption_window


async def test_tasks_failing_for_good_fail_their_jobs_with_the_reason(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(faults=FaultSettings(task_fail=1.0))
    sf = await segflow(sb.url)
    batch_id, job_ids = await submit(sf, sb, 5)
    summary = await wait_done(sf, batch_id, 30)
    assert summary["counts"]["failed"] == 5
    job = await sf.client.get_job(job_ids[0])
    assert job["error"]["code"] == "upstream_failed" and job["error"]["message"]


async def test_outputs_expired_before_download_fail_with_output_expired(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(faults=FaultSettings(output_expire_early=1.0))
    sf = await segflow(sb.url)
    batch_id, job_ids = await submit(sf, sb, 3)
    summary = await wait_done(sf, batch_id, 30)
    assert summary["counts"]["failed"] == 3
    assert (await sf.client.get_job(job_ids[0]))["error"]["code"] == "output_expired"


async def test_concurrency_cap_is_never_exceeded_upstream(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(concurrency_limit=4, latency_min_s=0.1, latency_max_s=0.2)
    sf = await segflow(sb.url, max_in_flight=4)
    summary, _ = await run(sf, sb, 30)
    assert summary["counts"]["succeeded"] == 30
    assert sb.engine.stats_json()["creates_rejected"].get("429", 0) == 0  # never over the account's limit


async def test_no_task_is_created_while_masks_wait_to_be_downloaded(sandbox: Any, segflow: Any) -> None:
    """Downloads stalled: segflow stops paying for tasks whose masks it could not save in time,
    and goes on once the backlog drains. The workers' rounds are driven by hand, one at a time."""
    sb = await sandbox(latency_min_s=0.0, latency_max_s=0.05)
    sf = await segflow(sb.url, roles=(), max_fetch_backlog=3)
    batch_id, _ = await submit(sf, sb, 8)
    submitter = Submitter(sf.services)

    async def counts() -> dict[str, int]:
        return dict((await sf.client.get_batch(batch_id))["counts"])

    async def backlog_full() -> bool:
        return (await counts()).get(State.FETCHING.value, 0) == 3

    await submitter.round()
    await wait_until(backlog_full, 10, "3 jobs fetching")
    assert not await submitter.round()  # no room: nothing claimed, nothing created
    assert (await counts())["queued"] == 5
    assert sb.engine.stats_json()["tasks_created"] == 3

    fetcher = Fetcher(sf.services)
    await fetcher.round()

    async def three_stored() -> bool:
        return (await counts()).get(State.SUCCEEDED.value, 0) == 3

    await wait_until(three_stored, 10, "3 masks stored")
    await submitter.round()
    assert (await counts())["queued"] == 2  # room again: the next 3 go out
    await submitter.stop()
    await fetcher.stop()
