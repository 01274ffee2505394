"""What a client may do to one of its jobs: cancel it, or retry it once it failed.

Each action is a pure decide function for `Store.transition` (so it races safely with webhooks,
polls and workers) plus a small coroutine that runs it for one tenant and says why it was refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from service.changes import apply
from service.completion import CANCEL_REQUESTED
from service.context import Services
from service.jobs import Change, DecideFn, JobRow, Outcome, TaskRow
from service.states import Event, State, transition
from service.upstream.errors import UpstreamError
from service.webhook_secrets import MAX_ATTEMPTS_VERIFIED

log = structlog.get_logger("segflow.job_actions")

SOURCE = "api"


class ActionRefused(Exception):
    """The action does not apply. `code`: not_found | not_cancellable | not_retryable | retry_limit |
    upstream_refused (the upstream would not cancel the task; `reason` says why) |
    upstream_unavailable (it could not be asked)."""

    def __init__(self, code: str, job: JobRow | None, reason: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.job = job
        self.reason = reason


@dataclass(frozen=True)
class Cancelled:
    job: JobRow  # as it is now: cancelled
    task_to_stop: str | None  # a task the upstream has not been asked to stop yet (best effort, later)


def cancel(job: JobRow | None, _task: TaskRow | None) -> Change | None:
    """Cancel a job that has not reached fetching or an end state."""
    if job is None or transition(job.state, Event.CANCEL) is None:
        return None
    return Change(Event.CANCEL, SOURCE, detail={"task_id": job.task_id} if job.task_id else None)


def retry(now: float) -> DecideFn:
    """Send a failed job again as a new attempt, with the previous attempt's traces cleared."""

    def decide(job: JobRow | None, _task: TaskRow | None) -> Change | None:
        if job is None or transition(job.state, Event.RETRY) is None or not can_attempt(job.attempt + 1):
            return None
        return Change(
            Event.RETRY,
            SOURCE,
            set={
                "attempt": job.attempt + 1,
                "not_before": now,
            },
            detail={"next_attempt": job.attempt + 1},
        )

    return decide


def can_attempt(attempt: int) -> bool:
    # Webhook secrets are verified only up to this attempt; a later one could never be adopted.
    return attempt <= MAX_ATTEMPTS_VERIFIED


def owned_by(tenant: str, decide: DecideFn) -> DecideFn:
    """`decide`, applied only to `tenant`'s jobs: another tenant's job is left as if absent."""

    def guarded(job: JobRow | None, task: TaskRow | None) -> Change | None:
        return decide(job, task) if job is not None and job.tenant == tenant else None

    return guarded


def _marking(task_id: str, *, clear_because: str | None = None, reason: str = "") -> DecideFn:
    """Set the cancel-requested mark of a submitted job whose task is `task_id`, or clear it (with
    the note `clear_because` and the upstream's reason in the timeline)."""

    def decide(job: JobRow | None, _task: TaskRow | None) -> Change | None:
        if job is None or job.state is not State.SUBMITTED or job.task_id != task_id:
            return None
        detail = {"task_id": task_id}
        if clear_because is None:
            return Change(None, SOURCE, set={"error_code": CANCEL_REQUESTED}, note="cancel_requested", detail=detail)
        if job.error_code != CANCEL_REQUESTED:
            return None
        return Change(None, SOURCE, set={"error_code": None}, note=clear_because, detail={**detail, "reason": reason})

    return decide


async def cancel_job(services: Services, tenant: str, job_id: str) -> Cancelled:
    """Cancel `tenant`'s job; raises ActionRefused.

    A submitted job's task may be running upstream, and the provider cancels only pending tasks, so
    the upstream is asked first: the job ends cancelled if it agrees, and keeps running (refused,
    with the provider's reason) if not. A job with no known task yet is cancelled at once; a task
    that may exist for it is the caller's to stop next (`task_to_stop`, best effort)."""
    job = await services.store.get_job(job_id)
    if job is not None and job.tenant == tenant and job.state is State.SUBMITTED and job.task_id:
        return await _cancel_running(services, tenant, job, job.task_id)
    outcome = await apply(services, job_id, owned_by(tenant, cancel), source=SOURCE)
    if not outcome.applied:
        raise _refused(outcome, tenant, "not_cancellable")
    assert outcome.after is not None and outcome.before is not None  # applied outcomes carry both
    log.info("job_cancelled", job_id=job_id, task_id=outcome.before.task_id)
    return Cancelled(outcome.after, outcome.before.task_id)


async def _cancel_running(services: Services, tenant: str, job: JobRow, task_id: str) -> Cancelled:
    store = services.store
    marked = await store.transition(job.id, owned_by(tenant, _marking(task_id)))
    if not marked.applied:  # it moved on meanwhile: decide again from its new state
        if _moved(marked, job):
            return await cancel_job(services, tenant, job.id)
        raise _refused(marked, tenant, "not_cancellable")
    try:
        answer = await services.upstream.cancel_task(task_id)
    except UpstreamError as exc:
        log.warning("upstream_cancel_failed", job_id=job.id, task_id=task_id, error_class=type(exc).__name__)
        why = str(exc)[:300]
        await store.transition(job.id, _marking(task_id, clear_because="cancel_unanswered", reason=why))
        raise ActionRefused("upstream_unavailable", marked.after, why) from None
    if not answer.accepted:
        log.info("upstream_cancel_refused", job_id=job.id, task_id=task_id, reason=answer.reason)
        cleared = await store.transition(
            job.id, _marking(task_id, clear_because="cancel_refused", reason=answer.reason[:300])
        )
        raise ActionRefused("upstream_refused", cleared.after or marked.after, answer.reason)

    def decide(current: JobRow | None, task: TaskRow | None) -> Change | None:
        if current is None or current.task_id != task_id:
            return None
        return cancel(current, task)

    outcome = await apply(services, job.id, decide, source=SOURCE)
    if not outcome.applied:
        if outcome.before is not None and outcome.before.state is State.CANCELLED:
            return Cancelled(outcome.before, None)  # the task's `cancelled` snapshot got here first
        raise _refused(outcome, tenant, "not_cancellable")
    assert outcome.after is not None
    log.info("job_cancelled", job_id=job.id, task_id=task_id, upstream=answer.reason)
    return Cancelled(outcome.after, None)


def _moved(outcome: Outcome, job: JobRow) -> bool:
    return outcome.before is not None and outcome.before.tenant == job.tenant and outcome.before.state != job.state


async def cancel_upstream(services: Services, task_id: str) -> None:
    """Ask the upstream to stop `task_id`; a failure only costs money, so it is logged, not raised."""
    try:
        answer = await services.upstream.cancel_task(task_id)
    except UpstreamError as exc:
        log.warning("upstream_cancel_failed", task_id=task_id, error_class=type(exc).__name__, error=str(exc))
        return
    log.info("upstream_cancel_sent", task_id=task_id, stopped=answer.accepted, reason=answer.reason)


async def retry_job(services: Services, tenant: str, job_id: str) -> Outcome:
    """Queue `tenant`'s failed job for a new attempt; raises ActionRefused."""
    outcome = await apply(services, job_id, owned_by(tenant, retry(time.time())), source=SOURCE)
    if not outcome.applied:
        before = outcome.before
        limited = before is not None and before.state is State.FAILED and not can_attempt(before.attempt + 1)
        raise _refused(outcome, tenant, "retry_limit" if limited else "not_retryable")
    log.info("job_retried", job_id=job_id, attempt=outcome.after.attempt if outcome.after else None)
    return outcome


def _refused(outcome: Outcome, tenant: str, code: str) -> ActionRefused:
    job = outcome.before
    if job is None or job.tenant != tenant:
        return ActionRefused("not_found", None)
    return ActionRefused(code, job)
