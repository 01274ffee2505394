"""The reconciler's duties, each provoked on purpose: adoption windows that pass, submit leases
of a dead submitter, jobs past their age; and the submitter's create rate."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from service.invariants import check_run
from service.sandbox.settings import FaultSettings
from service.states import State
from tests.fixtures.segflow import RunningSegflow
from tests.integration.test_flow import sandbox_tasks, submit, wait_done


async def wait_states(sf: RunningSegflow, job_ids: list[str], state: State, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        jobs = [await sf.store.get_job(j) for j in job_ids]
        if all(j is not None and j.state is state for j in jobs):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not all {state}: {[j.state for j in jobs if j]}")
        await asyncio.sleep(0.05)


async def test_job_is_sent_again_only_after_the_adoption_window_passes(sandbox: Any, segflow: Any) -> None:
    # Every create answer is lost and every webhook dropped: segflow cannot learn the task ids.
    sb = await sandbox(faults=FaultSettings(create_lost=1.0, webhook_drop=1.0))
    sf = await segflow(sb.url, adoption_window_s=1.0)
    batch_id, job_ids = await submit(sf, sb, 3)
    await wait_states(sf, job_ids, State.UNKNOWN)
    assert len(await sandbox_tasks(sb)) == 3  # nothing sent twice while the window is open
    sb.engine.set_faults(create_lost=0.0, webhook_drop=0.0)
    summary = await wait_done(sf, batch_id, 30)
    assert summary["counts"]["succeeded"] == 3
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok, report.violations
    assert report.duplicate_paid_tasks == report.resends_after_adoption_window == 3  # measured, not hidden
    for job_id in job_ids:
        job = await sf.store.get_job(job_id)
        assert job is not None and job.attempt == 2
        events = [e.event for e in await sf.store.job_events(job_id)]
        assert events.index("ambiguous") < events.index("adoption_window_passed") < events.index("stored")


async def test_a_dead_submitters_lease_turns_into_unknown_then_a_new_attempt(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=("reconciler",), adoption_window_s=0.5)
    _, job_ids = await submit(sf, sb, 2)
    # A submitter claims the jobs and dies before it can say what happened.
    claimed = await sf.store.claim_queued("dead-submitter", now=0.0, limit=10, max_in_flight=10, lease_s=0.0)
    assert {j.id for j in claimed} == set(job_ids)
    await wait_states(sf, job_ids, State.QUEUED)
    for job_id in job_ids:
        events = [(e.event, e.to_state) for e in await sf.store.job_events(job_id)]
        assert ("lease_expired", "unknown") in events and ("adoption_window_passed", "queued") in events
        job = await sf.store.get_job(job_id)
        assert job is not None and job.attempt == 2


async def test_jobs_past_their_maximum_age_expire(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", max_age_s=0.5)  # nothing listens: every create fails
    answer = await sf.client.create_batch([{"image": "http://127.0.0.1:1/i.png", "prompt": "x"}] * 3)
    batch_id = answer["batch_id"]
    summary = await wait_done(sf, batch_id, 20)
    assert summary["counts"]["expired"] == 3
    job = await sf.client.get_job(answer["jobs"][0]["job_id"])
    assert job["error"]["code"] == "expired"


async def test_creates_per_second_is_honoured(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, creates_per_s=10.0)
    batch_id, _ = await submit(sf, sb, 30)
    await wait_done(sf, batch_id, 30)
    created = sorted(datetime.fromisoformat(t["created_at"]).timestamp() for t in await sandbox_tasks(sb))
    # A bucket of 10 tokens refilled at 10/s: 30 creates need at least 2 s.
    assert created[-1] - created[0] >= 1.8
