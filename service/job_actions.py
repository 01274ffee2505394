"""What a client may do to one of its jobs: cancel it, or retry it once it failed.

Each action is a pure decide function for `Store.transition` (so it races safely with webhooks,
polls and workers) plus a small coroutine that runs it for one tenant and says why it was refused.
"""

from __future__ import annotations

import time

import structlog

from service.changes import apply
from service.context import Services
from service.jobs import Change, DecideFn, JobRow, Outcome, TaskRow
from service.states import Event, State, transition
from service.upstream.errors import UpstreamError
from service.webhook_secrets import MAX_ATTEMPTS_VERIFIED

log = structlog.get_logger("segflow.job_actions")

SOURCE = "api"


class ActionRefused(Exception):
    """The action does not apply. `code`: not_found | not_cancellable | not_retryable | retry_limit."""

    def __init__(self, code: str, job: JobRow | None) -> None:
        super().__init__(code)
        self.code = code
        self.job = job


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


async def cancel_job(services: Services, tenant: str, job_id: str) -> Outcome:
    """Cancel `tenant`'s job durably; raises ActionRefused. The upstream task, if any, is the
    caller's to cancel next (`cancel_upstream`), since that call is slow and only best-effort."""
    outcome = await apply(services, job_id, owned_by(tenant, cancel), source=SOURCE)
    if not outcome.applied:
        raise _refused(outcome, tenant, "not_cancellable")
    log.info("job_cancelled", job_id=job_id, task_id=outcome.before.task_id if outcome.before else None)
    return outcome


async def cancel_upstream(services: Services, task_id: str) -> None:
    """Ask the upstream to stop `task_id`; a failure only costs money, so it is logged, not raised."""
    try:
        stopped = await services.upstream.cancel_task(task_id)
    except UpstreamError as exc:
        log.warning("upstream_cancel_failed", task_id=task_id, error_class=type(exc).__name__, error=str(exc))
        return
    log.info("upstream_cancel_sent", task_id=task_id, stopped=stopped)


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
