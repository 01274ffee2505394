"""The job state machine: pure, no I/O. The store applies each transition as a compare-and-set.

A job is one (image, prompt, negative_prompt, segment_factor) request. `transition(state, event)`
returns the next state, or None when the event does not apply to that state (a stale, duplicate or
out-of-order fact); callers then change nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class State(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    UNKNOWN = "unknown"
    SUBMITTED = "submitted"
    FETCHING = "fetching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


class Event(enum.StrEnum):
    CLAIM = "claim"  # a submitter takes a queued job, holding a lease
    CREATED = "created"  # create answered 200 with a task id
    REJECTED = "rejected"  # create definitely refused; retrying cannot help
    RETRY_LATER = "retry_later"  # create definitely not applied (429, 5xx): queue with backoff
    AMBIGUOUS = "ambiguous"  # create may or may not have reached upstream
    CLAIM_LAPSED = "claim_lapsed"  # the claim's lease passed before its create was sent: queue again
    LEASE_EXPIRED = "lease_expired"  # the submitter holding the lease died mid-create
    ADOPTION_WINDOW_PASSED = "adoption_window_passed"  # no sign of the task: try again
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # would retry, but no attempts left
    PROGRESS = "progress"  # snapshot: task exists, not final
    COMPLETED = "completed"  # snapshot: task completed with outputs
    FAILED_RETRYABLE = "failed_retryable"  # snapshot: failed with "too many requests"
    FAILED_FINAL = "failed_final"  # snapshot: failed for good
    STORED = "stored"  # every mask is in the artifact store
    OUTPUT_GONE = "output_gone"  # outputs expired or invalid, no fresh ones
    CANCEL = "cancel"  # the client cancelled
    EXPIRE = "expire"  # past the maximum age
    RETRY = "retry"  # the client asked to retry a failed job


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.EXPIRED})

IN_FLIGHT = frozenset({State.SUBMITTING, State.UNKNOWN, State.SUBMITTED})
"""States in which an upstream task for the current attempt may exist and learn its fate (counted
against the upstream concurrency cap)."""
_LIVE = (State.QUEUED, *IN_FLIGHT, State.FETCHING)


def _table() -> dict[tuple[State, Event], State]:
    rules: dict[tuple[State, Event], State] = {
        (State.QUEUED, Event.CLAIM): State.SUBMITTING,
        (State.SUBMITTING, Event.CREATED): State.SUBMITTED,
        (State.SUBMITTING, Event.REJECTED): State.FAILED,
        (State.SUBMITTING, Event.RETRY_LATER): State.QUEUED,
        (State.SUBMITTING, Event.AMBIGUOUS): State.UNKNOWN,
        (State.SUBMITTING, Event.CLAIM_LAPSED): State.QUEUED,
        (State.SUBMITTING, Event.LEASE_EXPIRED): State.UNKNOWN,
        (State.UNKNOWN, Event.ADOPTION_WINDOW_PASSED): State.QUEUED,
        (State.UNKNOWN, Event.ATTEMPTS_EXHAUSTED): State.FAILED,
        (State.FETCHING, Event.STORED): State.SUCCEEDED,
        (State.FETCHING, Event.OUTPUT_GONE): State.FAILED,
        (State.FAILED, Event.RETRY): State.QUEUED,
    }
    for state in IN_FLIGHT:
        rules[(state, Event.PROGRESS)] = State.SUBMITTED
        rules[(state, Event.COMPLETED)] = State.FETCHING
        rules[(state, Event.FAILED_RETRYABLE)] = State.QUEUED
        rules[(state, Event.FAILED_FINAL)] = State.FAILED
        rules[(state, Event.ATTEMPTS_EXHAUSTED)] = State.FAILED
        rules[(state, Event.CANCEL)] = State.CANCELLED
    rules[(State.QUEUED, Event.CANCEL)] = State.CANCELLED
    for state in _LIVE:
        rules[(state, Event.EXPIRE)] = State.EXPIRED
    # PROGRESS on an already submitted job is a duplicate: no change.
    del rules[(State.SUBMITTED, Event.PROGRESS)]
    return rules


TRANSITIONS: dict[tuple[State, Event], State] = _table()


def transition(state: State, event: Event) -> State | None:
    """The state `event` moves a job in `state` to, or None if the event does not apply."""
    return TRANSITIONS.get((state, event))


def sources(event: Event) -> tuple[State, ...]:
    """Every state from which `event` applies: the `state IN (...)` guard of the store's CAS."""
    return tuple(s for s in State if (s, event) in TRANSITIONS)


def states_in(states: Iterable[State]) -> tuple[str, ...]:
    """State values for SQL parameters."""
    return tuple(s.value for s in states)
