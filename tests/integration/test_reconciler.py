"""The reconciler's duties, each provoked on purpose: adoption windows that pass, submit leases
of a dead submitter, jobs past their age; and the submitter's create rate."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.history import webhook_endpoint
from service.invariants import check_run
from service.jobs import Change, JobRow
from service.sandbox.settings import FaultSettings
from service.states import State
from service.upstream.errors import UpstreamTransient
from service.upstream.wire import CreateRequest
from tests.fixtures.sandbox import wait_until
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


async def test_without_the_history_a_job_is_sent_again_only_after_the_adoption_window_passes(
    sandbox: Any, segflow: Any
) -> None:
    # Every create answer is lost and every webhook dropped: segflow cannot learn the task ids, and
    # the history lookup is off (an account without it).
    sb = await sandbox(faults=FaultSettings(create_lost=1.0, webhook_drop=1.0))
    sf = await segflow(sb.url, adoption_window_s=1.0, history_lookup=False)
    batch_id, job_ids = await submit(sf, sb, 3)
    await wait_states(sf, job_ids, State.UNKNOWN)
    assert len(await sandbox_tasks(sb)) == 3  # nothing sent twice while the window is open

    async def first_tasks_ended() -> bool:  # their webhooks all dropped: none can adopt a job later
        return all(t["status"] in ("completed", "failed") for t in await sandbox_tasks(sb))

    await wait_until(first_tasks_ended, what="the lost creates' tasks to end")
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


async def test_the_history_adopts_the_tasks_of_lost_create_answers_without_paying_twice(
    sandbox: Any, segflow: Any
) -> None:
    # Every create answer lost and every webhook dropped: only the history can tell the task ids.
    sb = await sandbox(faults=FaultSettings(create_lost=1.0, webhook_drop=1.0))
    sf = await segflow(sb.url, adoption_window_s=600.0)
    batch_id, job_ids = await submit(sf, sb, 4)
    summary = await wait_done(sf, batch_id, 30)  # far sooner than the 600 s window
    assert summary["counts"]["succeeded"] == 4
    tasks = await sandbox_tasks(sb)
    assert len(tasks) == 4
    report = await check_run(sf.store, sf.services.artifacts, job_ids, tasks)
    assert report.ok, report.violations
    assert report.duplicate_paid_tasks == 0 and report.adopted_from_history == 4
    for job_id in job_ids:
        job = await sf.store.get_job(job_id)
        assert job is not None and job.attempt == 1
        [task] = await sf.store.job_tasks(job_id)
        assert task.origin == "adopted" and task.task_id == job.task_id


async def test_a_claim_that_lapsed_before_its_create_is_queued_again_at_once(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=("reconciler",), adoption_window_s=600.0)
    _, job_ids = await submit(sf, sb, 2)
    # A submitter claims the jobs and dies before it sends anything.
    claimed = await sf.store.claim_queued("dead-submitter", now=0.0, limit=10, max_in_flight=10, lease_s=0.0)
    assert {j.id for j in claimed} == set(job_ids)
    await wait_states(sf, job_ids, State.QUEUED, timeout_s=5)  # not after the 600 s window
    for job_id in job_ids:
        events = [(e.event, e.to_state) for e in await sf.store.job_events(job_id)]
        assert ("claim_lapsed", "queued") in events and not any(s == "unknown" for _, s in events)
        job = await sf.store.get_job(job_id)
        assert job is not None and job.attempt == 1 and job.sent_at is None
    assert await sandbox_tasks(sb) == []


async def _die_mid_create(sf: RunningSegflow, job_ids: list[str], send: Any) -> None:
    """A submitter claims the jobs, records that their creates go out, (maybe) sends them, and dies."""
    claimed = await sf.store.claim_queued("dead-submitter", now=0.0, limit=10, max_in_flight=10, lease_s=0.0)
    assert {j.id for j in claimed} == set(job_ids)
    for job in claimed:
        mark = Change(None, "submitter", set={"sent_at": time.time(), "lease_until": 0.0})
        await sf.store.transition(job.id, lambda _j, _t, mark=mark: mark)
        await send(job)


async def test_a_create_in_flight_when_its_submitter_died_is_adopted_from_the_history(
    sandbox: Any, segflow: Any
) -> None:
    sb = await sandbox(faults=FaultSettings(webhook_drop=1.0))
    sf = await segflow(sb.url, roles=("reconciler", "fetcher"), adoption_window_s=600.0)
    batch_id, job_ids = await submit(sf, sb, 2)

    async def send(job: JobRow) -> None:  # the create reached the upstream; its answer died with the process
        request = CreateRequest(
            job.image,
            job.prompt,
            job.negative_prompt,
            job.segment_factor,
            webhook_endpoint(sf.settings, job.id, job.attempt),
            sf.services.secrets.derive(job.id, job.attempt),
        )
        await sf.services.upstream.create_task(request)

    await _die_mid_create(sf, job_ids, send)
    summary = await wait_done(sf, batch_id, 20)
    assert summary["counts"]["succeeded"] == 2
    tasks = await sandbox_tasks(sb)
    report = await check_run(sf.store, sf.services.artifacts, job_ids, tasks)
    assert report.ok, report.violations
    assert len(tasks) == 2 and report.duplicate_paid_tasks == 0 and report.adopted_from_history == 2
    for job_id in job_ids:
        events = [(e.event, e.to_state, e.source) for e in await sf.store.job_events(job_id)]
        assert ("lease_expired", "unknown", "reconciler") in events
        assert ("completed", "fetching", "history") in events or ("progress", "submitted", "history") in events


async def test_a_create_that_never_arrived_is_sent_again_once_the_history_covers_its_window(
    sandbox: Any, segflow: Any
) -> None:
    sb = await sandbox()
    # The reconciler alone first: the claims are marked sent, but nothing reaches the upstream.
    sf = await segflow(sb.url, roles=("reconciler", "fetcher"), adoption_window_s=600.0)
    batch_id, job_ids = await submit(sf, sb, 2)
    await _die_mid_create(sf, job_ids, lambda _job: asyncio.sleep(0))
    await wait_states(sf, job_ids, State.QUEUED, timeout_s=10)  # upstream timeout 2 s + settle 0.5 s, not 600 s
    await segflow(sb.url, roles=("submitter",))  # a submitter comes back and sends them again
    summary = await wait_done(sf, batch_id, 20)
    assert summary["counts"]["succeeded"] == 2
    tasks = await sandbox_tasks(sb)
    report = await check_run(sf.store, sf.services.artifacts, job_ids, tasks)
    assert report.ok, report.violations
    assert len(tasks) == 2 and report.resends_after_history == 2 and report.duplicate_paid_tasks == 0
    for job_id in job_ids:
        job = await sf.store.get_job(job_id)
        assert job is not None and job.attempt == 2


async def test_history_unavailable_falls_back_to_the_adoption_window(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(faults=FaultSettings(create_lost=1.0, webhook_drop=1.0))
    # Nothing serves the history at this address: the lookups fail, the window decides.
    sf = await segflow(sb.url, adoption_window_s=1.0)
    sf.services.upstream.list_tasks = _unavailable  # type: ignore[method-assign]
    batch_id, job_ids = await submit(sf, sb, 2)
    await wait_states(sf, job_ids, State.UNKNOWN)
    sb.engine.set_faults(create_lost=0.0, webhook_drop=0.0)
    summary = await wait_done(sf, batch_id, 30)
    assert summary["counts"]["succeeded"] == 2
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok, report.violations
    assert report.resends_after_adoption_window == 2 and report.resends_after_history == 0


async def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
    raise UpstreamTransient("GET /api/open/tasks/histories: upstream answered 503")


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
    batch_id, job_ids = await submit(sf, sb, 30)
    await wait_done(sf, batch_id, 30)
    assert len(await sandbox_tasks(sb)) == 30  # one create each
    # When each create went out: its job's sent mark, set right after its token. (Not the sandbox's
    # created_at: that is stamped after the sandbox has fetched the input image, and under load the
    # first burst's fetches took 0.25 s, which shrank the spread the test saw.)
    jobs = [await sf.store.get_job(job_id) for job_id in job_ids]
    sent = sorted(j.sent_at for j in jobs if j is not None and j.sent_at is not None)
    assert len(sent) == 30
    # A bucket of 10 tokens refilled at 10/s: 30 creates need at least 2 s.
    assert sent[-1] - sent[0] >= 1.9
