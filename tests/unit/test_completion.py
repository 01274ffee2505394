"""The completion decision, as a pure function of (job, known task, snapshot)."""

from __future__ import annotations

import msgspec
import pytest

from service.completion import SnapshotPolicy, SnapshotRefused, decide_snapshot
from service.jobs import JobRow, TaskRow
from service.states import Event, State
from service.upstream.wire import TaskError, TaskSnapshot, TaskStatus
from tests.fixtures.rows import job_row

POLICY = SnapshotPolicy(max_attempts=3, poll_after_s=30.0, retry_base_s=2.0, retry_max_s=60.0)
NOW = 1000.0


def job(state: State, *, attempt: int = 1, task_id: str | None = "T1") -> JobRow:
    return job_row(state, attempt=attempt, task_id=task_id, image="https://x/i.png")


def task(task_id: str = "T1", attempt: int = 1, job_id: str = "J", origin: str = "created") -> TaskRow:
    return TaskRow(task_id, job_id, attempt, origin, "pending", 0.0, 0.0)


def snap(status: TaskStatus, task_id: str = "T1", *, error: str = "", outputs: tuple[str, ...] = ()) -> TaskSnapshot:
    return TaskSnapshot(
        task_id=task_id,
        model="Qubico/image-toolkit",
        task_type="segment",
        status=status,
        raw_status=status.value,
        output_urls=outputs or (("https://o/m.png",) if status is TaskStatus.COMPLETED else ()),
        error=TaskError(10000, error, error) if error else None,
        created_at=None,
        started_at=None,
        ended_at=None,
        usage_consume=None,
        logs=(),
        webhook_endpoint=None,
    )


def decide(s: TaskSnapshot, j: JobRow | None, t: TaskRow | None, attempt: int | None = 1):  # type: ignore[no-untyped-def]
    return decide_snapshot(s, attempt=attempt, source="webhook", policy=POLICY, now=NOW)(j, t)


@pytest.mark.parametrize("state", [State.SUBMITTING, State.UNKNOWN, State.SUBMITTED])
def test_completed_moves_every_awaiting_state_to_fetching_with_outputs(state: State) -> None:
    task_id = None if state is not State.SUBMITTED else "T1"
    change = decide(snap(TaskStatus.COMPLETED), job(state, task_id=task_id), task() if task_id else None)
    assert change.event is Event.COMPLETED
    assert change.set["output_urls"] == ("https://o/m.png",)
    assert change.set["lease_until"] == 0.0  # claimable by a fetcher at once


@pytest.mark.parametrize("state", [State.FETCHING, State.SUCCEEDED, State.FAILED, State.CANCELLED, State.EXPIRED])
@pytest.mark.parametrize("status", list(TaskStatus))
def test_nothing_changes_a_job_past_submitted_for_a_known_task(state: State, status: TaskStatus) -> None:
    assert decide(snap(status), job(state), task()) is None


def test_duplicate_progress_on_a_submitted_job_writes_nothing() -> None:
    assert decide(snap(TaskStatus.PROCESSING), job(State.SUBMITTED), task()) is None


def test_pending_webhook_adopts_the_task_of_an_ambiguous_create() -> None:
    change = decide(snap(TaskStatus.PENDING, "T9"), job(State.UNKNOWN, task_id=None), None)
    assert change.event is Event.PROGRESS
    assert change.set["task_id"] == "T9"
    assert change.task is not None and change.task.origin == "adopted"
    assert change.set["next_check_at"] == NOW + POLICY.poll_after_s


def test_webhook_racing_the_create_answer_is_taken_as_created() -> None:
    change = decide(snap(TaskStatus.PENDING, "T9"), job(State.SUBMITTING, task_id=None), None)
    assert change.event is Event.PROGRESS
    assert change.task is not None and change.task.origin == "created"


def test_retryable_failure_starts_a_new_attempt_with_backoff() -> None:
    change = decide(snap(TaskStatus.FAILED, error="too many requests"), job(State.SUBMITTED), task())
    assert change.event is Event.FAILED_RETRYABLE
    assert change.set["attempt"] == 2 and change.set["task_id"] is None
    assert NOW + 1.0 <= change.set["not_before"] <= NOW + 2.0


def test_retryable_failure_on_the_last_attempt_fails_the_job() -> None:
    change = decide(
        snap(TaskStatus.FAILED, error="Too Many Requests"),
        job(State.SUBMITTED, attempt=3),
        task(attempt=3),
        attempt=3,
    )
    assert change.event is Event.ATTEMPTS_EXHAUSTED
    assert change.set["error_code"] == "attempts_exhausted"


def test_real_failure_fails_the_job_with_the_upstream_message() -> None:
    change = decide(snap(TaskStatus.FAILED, error="image could not be read"), job(State.SUBMITTED), task())
    assert change.event is Event.FAILED_FINAL
    assert change.set["error_message"] == "image could not be read"


def test_failure_of_an_old_attempts_task_changes_nothing() -> None:
    current = job(State.SUBMITTED, attempt=2, task_id="T2")
    assert decide(snap(TaskStatus.FAILED, "T1", error="boom"), current, task("T1", attempt=1), attempt=1) is None


def test_completion_of_an_unknown_task_from_an_old_attempt_is_used_and_recorded_as_orphan() -> None:
    current = job(State.SUBMITTED, attempt=2, task_id="T2")
    change = decide(snap(TaskStatus.COMPLETED, "T1"), current, None, attempt=1)
    assert change.event is Event.COMPLETED
    assert change.task is not None and (change.task.origin, change.task.attempt) == ("orphan", 1)
    assert "task_id" not in change.set  # the job's current task stays what it was


def test_a_stale_delivery_of_a_never_seen_task_is_recorded_not_applied() -> None:
    change = decide(snap(TaskStatus.COMPLETED, "T7"), job(State.SUCCEEDED), None)
    assert change.event is None and change.task is not None and change.note == "task_recorded"


def test_task_of_another_job_is_refused() -> None:
    with pytest.raises(SnapshotRefused):
        decide(snap(TaskStatus.COMPLETED), job(State.SUBMITTED), task(job_id="OTHER"))


def test_secret_of_another_attempt_than_the_tasks_is_refused() -> None:
    with pytest.raises(SnapshotRefused):
        decide(snap(TaskStatus.COMPLETED), job(State.SUBMITTED, attempt=2), task(attempt=1), attempt=2)


def test_attempt_not_yet_started_is_refused() -> None:
    with pytest.raises(SnapshotRefused):
        decide(snap(TaskStatus.PENDING, "T5"), job(State.UNKNOWN, task_id=None), None, attempt=2)


def test_unknown_job_decides_nothing() -> None:
    assert decide(snap(TaskStatus.COMPLETED), None, None) is None


def test_poll_of_the_jobs_own_task_needs_no_attempt() -> None:
    change = decide(snap(TaskStatus.COMPLETED), job(State.SUBMITTED), task(), attempt=None)
    assert change.event is Event.COMPLETED


def test_decision_is_the_same_whatever_the_snapshot_order() -> None:
    """Any order of the same snapshots ends in the same state (applying each decision in turn)."""
    from itertools import permutations

    from service.states import transition

    snaps = [snap(TaskStatus.PENDING), snap(TaskStatus.PROCESSING), snap(TaskStatus.COMPLETED)]
    finals = set()
    for order in permutations(snaps * 2):
        j = job(State.SUBMITTED)
        for s in order:
            change = decide(s, j, task())
            if change is not None and change.event is not None:
                nxt = transition(j.state, change.event)
                assert nxt is not None
                j = msgspec.structs.replace(j, state=nxt)
        finals.add(j.state)
    assert finals == {State.FETCHING}


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("input.image is 4000x3000 px; each side must be at most 3072 px", "invalid_image"),
        ("invalid image: cannot identify image file", "invalid_image"),
        ("segmentation failed: the model returned no mask", "upstream_failed"),
    ],
)
def test_failures_are_sorted_into_input_errors_and_others_never_retried(error: str, code: str) -> None:
    change = decide(snap(TaskStatus.FAILED, error=error), job(State.SUBMITTED), task())
    assert change.event is Event.FAILED_FINAL
    assert change.set["error_code"] == code and "attempt" not in change.set


@pytest.mark.parametrize("state", [State.SUBMITTING, State.UNKNOWN, State.SUBMITTED])
def test_a_task_cancelled_by_someone_else_fails_its_job_without_a_resend(state: State) -> None:
    task_id = None if state is not State.SUBMITTED else "T1"
    change = decide(snap(TaskStatus.CANCELLED), job(state, task_id=task_id), task() if task_id else None)
    assert change.event is Event.FAILED_FINAL
    assert change.set["error_code"] == "upstream_cancelled" and "attempt" not in change.set


def test_a_task_cancelled_at_segflows_request_ends_the_job_cancelled() -> None:
    asked = msgspec.structs.replace(job(State.SUBMITTED), error_code="cancel_requested")
    change = decide(snap(TaskStatus.CANCELLED), asked, task())
    assert change.event is Event.CANCEL and change.set["error_code"] is None


def test_a_cancelled_job_ignores_its_tasks_cancelled_snapshot() -> None:
    assert decide(snap(TaskStatus.CANCELLED), job(State.CANCELLED), task()) is None


def test_staged_is_in_flight_and_polled_on_the_slower_schedule() -> None:
    change = decide(snap(TaskStatus.STAGED, "T9"), job(State.UNKNOWN, task_id=None), None)
    assert change.event is Event.PROGRESS
    assert change.set["next_check_at"] == NOW + POLICY.staged_poll_after_s
    running = decide(snap(TaskStatus.PROCESSING, "T9"), job(State.UNKNOWN, task_id=None), None)
    assert running.set["next_check_at"] == NOW + POLICY.poll_after_s < change.set["next_check_at"]
    assert not TaskStatus.STAGED.is_final


def test_a_task_leaving_staged_is_polled_on_the_running_schedule_again() -> None:
    staged = msgspec.structs.replace(job(State.SUBMITTED), next_check_at=NOW + POLICY.staged_poll_after_s)
    change = decide(snap(TaskStatus.PROCESSING), staged, task())
    assert change.event is None and change.set == {"next_check_at": NOW + POLICY.poll_after_s}
    assert decide(snap(TaskStatus.STAGED), staged, task()) is None  # still staged: nothing new


def test_a_poll_of_a_running_task_leaves_its_rescheduling_to_the_reconciler() -> None:
    held = msgspec.structs.replace(job(State.SUBMITTED), next_check_at=NOW + 3 * POLICY.poll_after_s)
    poll = decide_snapshot(snap(TaskStatus.PROCESSING), attempt=None, source="poll", policy=POLICY, now=NOW)
    assert poll(held, task()) is None  # the reconciler's own reschedule (with its backoff) applies
