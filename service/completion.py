"""The completion path: the one place an upstream snapshot changes a job.

Webhooks and polls are two ways of learning the same fact ("task T is in state S with output O");
both call `apply_snapshot`, which runs `decide_snapshot` inside the store's write transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.backoff import Backoff
from service.changes import apply
from service.context import Services
from service.jobs import Change, DecideFn, JobRow, Outcome, TaskRow, TaskUpsert
from service.states import IN_FLIGHT, Event, State
from service.upstream.wire import FailureKind, TaskSnapshot, TaskStatus

CANCEL_REQUESTED = "cancel_requested"
"""error_code of a submitted job whose upstream cancel the API is asking for (see job_actions)."""


class SnapshotRefused(Exception):
    """The snapshot names a task that cannot belong to this job (or attempt)."""


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """The settings `decide_snapshot` needs; pure values so the decision stays testable."""

    max_attempts: int
    poll_after_s: float
    retry_base_s: float
    retry_max_s: float
    staged_poll_after_s: float = 120.0

    def next_poll_s(self, status: TaskStatus) -> float:
        """When to look again at a task in `status`: a staged task waits for a slot in the provider's
        queue, so polling it as often as a running one only spends requests."""
        return self.staged_poll_after_s if status is TaskStatus.STAGED else self.poll_after_s


def decide_snapshot(
    snap: TaskSnapshot, *, attempt: int | None, source: str, policy: SnapshotPolicy, now: float
) -> DecideFn:
    """A decide function for `Store.transition`: what `snap` changes in the job it concerns.

    `attempt` is the attempt the webhook secret proved (None for a poll of the job's own task).
    """

    def decide(job: JobRow | None, task: TaskRow | None) -> Change | None:
        if job is None:
            return None
        task_attempt = _owning_attempt(job, task, attempt)
        current = snap.task_id == job.task_id or (
            task_attempt == job.attempt and job.task_id is None and job.state in (State.SUBMITTING, State.UNKNOWN)
        )
        origin = task.origin if task else _origin(job, current)
        upsert = TaskUpsert(snap.task_id, task_attempt, origin, snap.status.value, *_timings(job, snap, source, now))
        detail = {"task_id": snap.task_id, "status": snap.raw_status, "attempt": task_attempt}
        adopt = {"task_id": snap.task_id} if current and job.task_id is None else {}
        if job.state not in IN_FLIGHT:
            # Stale or duplicate: only a task we never heard of is worth writing down (it was paid).
            return Change(None, source, task=upsert, note="task_recorded", detail=detail) if task is None else None
        if snap.status is TaskStatus.COMPLETED:
            return Change(
                Event.COMPLETED,
                source,
                set={
                    **adopt,
                    "output_urls": snap.output_urls,
                    "completed_at": now,
                },
                task=upsert,
                detail=detail,
            )
        if not current:
            return Change(None, source, task=upsert, note="task_recorded", detail=detail) if task is None else None
        if snap.status is TaskStatus.FAILED:
            return _failure(job, snap, policy, now, source, upsert, detail, adopt)
        if snap.status is TaskStatus.CANCELLED:
            return _cancelled(job, source, upsert, detail, adopt)
        if job.state is State.SUBMITTED:
            # Progress on a job already known to be submitted: nothing new, unless a webhook says its
            # task has left `staged` (polled slowly) for the running schedule. (A poll reschedules
            # itself, with its backoff.)
            sooner = now + policy.next_poll_s(snap.status)
            if source == "poll" or job.next_check_at is None or job.next_check_at <= sooner:
                return None
            return Change(None, source, set={"next_check_at": sooner}, task=upsert, detail=detail)
        return Change(
            Event.PROGRESS,
            source,
            set={
                **adopt,
                "submitted_at": job.submitted_at or now,
                "next_check_at": now + policy.next_poll_s(snap.status),
            },
            task=upsert,
            detail=detail,
        )

    return decide


def _timings(job: JobRow, snap: TaskSnapshot, source: str, now: float) -> tuple[float | None, float | None]:
    """What a final snapshot tells about the upstream's pace: its run time by its own clock, and
    (for a webhook of the current attempt's create) how long after our create it came. The
    adaptive first poll and adoption window are computed from these (service/timings.py)."""
    if not snap.status.is_final:
        return None, None
    run = None
    if snap.created_at is not None and snap.ended_at is not None:
        run = max(0.0, (snap.ended_at - snap.created_at).total_seconds())
    heard = now - job.sent_at if source == "webhook" and job.sent_at and snap.task_id == job.task_id else None
    return run, heard


def _owning_attempt(job: JobRow, task: TaskRow | None, attempt: int | None) -> int:
    if task is not None:
        if task.job_id != job.id or (attempt is not None and attempt != task.attempt):
            raise SnapshotRefused("task belongs to another job or attempt")
        return task.attempt
    if attempt is None:
        raise SnapshotRefused("task unknown to this job")
    if attempt > job.attempt:
        raise SnapshotRefused("attempt not started")
    return attempt


def _origin(job: JobRow, current: bool) -> str:
    if not current:
        return "orphan"
    return "adopted" if job.state is State.UNKNOWN else "created"


def _cancelled(
    job: JobRow, source: str, upsert: TaskUpsert, detail: dict[str, object], adopt: dict[str, str]
) -> Change:
    """The job's current task was cancelled upstream. If segflow asked for it (the API's cancel
    marks the job first) the job ends cancelled; otherwise someone else did (the provider's
    dashboard, a bulk cancel): the job fails, and is not sent again on its own, since that was
    done on purpose; the client may retry it."""
    if job.error_code == CANCEL_REQUESTED:
        return Change(Event.CANCEL, source, set={**adopt, "error_code": None}, task=upsert, detail=detail)
    return Change(
        Event.FAILED_FINAL,
        source,
        set={**adopt, "error_code": "upstream_cancelled", "error_message": "the task was cancelled upstream"},
        task=upsert,
        detail=detail,
    )


def _failure(
    job: JobRow,
    snap: TaskSnapshot,
    policy: SnapshotPolicy,
    now: float,
    source: str,
    upsert: TaskUpsert,
    detail: dict[str, object],
    adopt: dict[str, str],
) -> Change:
    """A failure of the job's current task. `adopt` records the task id when the failure is the first
    the job hears of its task (an ambiguous create, or a webhook racing the create's answer), so the
    failed job names its task whatever order the snapshots came in."""
    message = (snap.error.message or snap.error.raw_message) if snap.error else "failed upstream"
    kind = snap.failure_kind
    if kind is FailureKind.RETRYABLE:
        if job.attempt < policy.max_attempts:
            delay = retry_delay(job.attempt, policy)
            return Change(
                Event.FAILED_RETRYABLE,
                source,
                set={
                    "attempt": job.attempt + 1,
                    "not_before": now + delay,
                    "error_code": "upstream_rate_limited",
                    "error_message": message,
                },
                task=upsert,
                detail={**detail, "retry_in_s": round(delay, 3)},
            )
        return Change(
            Event.ATTEMPTS_EXHAUSTED,
            source,
            set={**adopt, "error_code": "attempts_exhausted", "error_message": message},
            task=upsert,
            detail=detail,
        )
    # A permanent input error (the image cannot be used) is never sent again automatically; the
    # code tells the client to fix the input rather than retry.
    code = "invalid_image" if kind is FailureKind.INPUT else "upstream_failed"
    return Change(
        Event.FAILED_FINAL,
        source,
        set={**adopt, "error_code": code, "error_message": message[:500]},
        task=upsert,
        detail=detail,
    )


def retry_delay(attempt: int, policy: SnapshotPolicy) -> float:
    """Backoff before attempt `attempt + 1` after a retryable failure, with jitter."""
    return Backoff(policy.retry_base_s, policy.retry_max_s).delay(attempt - 1)


def policy_of(services: Services) -> SnapshotPolicy:
    """The settings, with the first poll where the observed run times put it (service/timings.py)."""
    s = services.settings
    first_poll = services.timings.current(s).first_poll_s
    return SnapshotPolicy(
        s.max_attempts, first_poll, s.submit_backoff_base_s, s.submit_backoff_max_s, s.staged_poll_after_s
    )


async def apply_snapshot(
    services: Services,
    job_id: str,
    snap: TaskSnapshot,
    *,
    attempt: int | None,
    source: str,
    otherwise: DecideFn | None = None,
) -> Outcome:
    """Apply `snap` to job `job_id` as one compare-and-set; wakes the fetcher on completion.

    `otherwise` decides what to write when the snapshot itself changes nothing (the reconciler
    reschedules its next poll that way).
    """
    decide = decide_snapshot(snap, attempt=attempt, source=source, policy=policy_of(services), now=time.time())
    if otherwise is not None:
        first = decide

        def decide(job: JobRow | None, task: TaskRow | None) -> Change | None:
            return first(job, task) or otherwise(job, task)

    return await apply(services, job_id, decide, source=source, task_id=snap.task_id)
