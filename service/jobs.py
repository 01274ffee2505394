"""The records segflow keeps and the vocabulary for changing them: jobs, batches, tasks, events,
artifacts, callbacks, and `Change`/`Outcome`, the in and out of every transition (`service.store`
reads and writes them; everything else works with them).

Each `Event` declares the job columns it resets (`RESETS`), so callers say only what is new.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.states import Event, State


@dataclass(frozen=True, slots=True)
class JobInput:
    image: str
    prompt: str
    negative_prompt: str = ""
    segment_factor: int = 0
    metadata: Mapping[str, Any] | None = None
    trace_context: str | None = None  # W3C traceparent of the job's span (None: tracing off)


class JobRow(msgspec.Struct, frozen=True, gc=False):
    """A job as stored. A C struct (msgspec), not a dataclass: every transition builds two of these
    35-field rows, and a frozen dataclass's `__init__` (one `object.__setattr__` per field) cost
    ten times as much. `gc=False`: its fields are scalars, a tuple and a decoded JSON mapping, so it
    can be part of no reference cycle."""

    id: str
    batch_id: str
    tenant: str
    seq: int
    image: str
    prompt: str
    negative_prompt: str
    segment_factor: int
    metadata: Mapping[str, Any] | None
    state: State
    attempt: int
    task_id: str | None
    lease_owner: str | None
    lease_until: float | None
    not_before: float
    next_check_at: float | None
    submit_tries: int
    poll_count: int
    submitted_at: float | None
    unknown_since: float | None
    completed_at: float | None
    output_urls: tuple[str, ...]
    error_code: str | None
    error_message: str | None
    pixels: int | None
    price_usd: float | None
    created_at: float
    updated_at: float
    finished_at: float | None
    sent_at: float | None = None  # when the current attempt's create was about to go out (None: not sent)
    trace_context: str | None = None  # the job's span, set once at acceptance (migration 0008)
    # Spend (issue 19): the preflight's estimate, and what is held against the caps for the live
    # attempt until the real price settles it (reserved_at names the day and month it counts to).
    est_usd: float | None = None
    reserved_usd: float | None = None
    reserved_at: float | None = None


JOB_COLUMNS: tuple[str, ...] = JobRow.__struct_fields__
FIXED_COLUMNS = frozenset(
    {"id", "batch_id", "tenant", "seq", "image", "prompt", "negative_prompt", "segment_factor", "metadata"}
    | {"trace_context"}
)
MUTABLE_COLUMNS: tuple[str, ...] = tuple(
    c for c in JOB_COLUMNS if c not in FIXED_COLUMNS and c not in ("state", "created_at", "updated_at")
)
"""Columns a `Change` may set, in the order of the `update_job` statement; state and updated_at
are the store's own."""


def _none(*columns: str) -> Mapping[str, Any]:
    return dict.fromkeys(columns, None)


_LEASE = _none("lease_owner", "lease_until")
_ENDED = _none("lease_owner", "lease_until", "next_check_at")
_ATTEMPT = _none("task_id", "next_check_at", "unknown_since", "sent_at")  # a new attempt starts clean
RESETS: Mapping[Event, Mapping[str, Any]] = {
    Event.CLAIM: {},
    Event.CREATED: {**_LEASE, "unknown_since": None},
    Event.PROGRESS: {**_LEASE, "unknown_since": None},
    # The create did not happen: nothing of it exists, and what it reserved against the caps is free.
    Event.RETRY_LATER: {**_LEASE, "sent_at": None, "reserved_usd": None},
    Event.CLAIM_LAPSED: {**_LEASE, "reserved_usd": None},  # lapsed before the create was sent
    Event.AMBIGUOUS: _LEASE,
    Event.LEASE_EXPIRED: _LEASE,
    Event.ADOPTION_WINDOW_PASSED: _ATTEMPT,
    # lease_until 0.0, not NULL: the job is due for the fetcher's claim (`lease_until < now`) at once.
    Event.COMPLETED: {**_none("lease_owner", "next_check_at", "unknown_since"), "lease_until": 0.0},
    Event.FAILED_RETRYABLE: {**_LEASE, **_ATTEMPT},
    # The previous attempt's traces and times would mislead the workers' schedules for the new one.
    Event.RETRY: {
        **_LEASE,
        **_ATTEMPT,
        **_none("error_code", "error_message", "finished_at", "submitted_at", "completed_at"),
        **{"submit_tries": 0, "output_urls": (), "poll_count": 0},
    },
    # Refused: nothing was paid. Stored: the price (set with it) settles the reservation.
    **{e: {**_ENDED, "reserved_usd": None} for e in (Event.REJECTED, Event.STORED)},
    **{e: _ENDED for e in (Event.ATTEMPTS_EXHAUSTED, Event.FAILED_FINAL)},
    **{e: _ENDED for e in (Event.OUTPUT_GONE, Event.CANCEL, Event.EXPIRE)},
}
"""What each event clears; `Change` merges it under the caller's own `set`, so a caller names only
what its change makes new. Events into an end state end the lease and the poll schedule (and the
store stamps `finished_at`)."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    tenant: str
    callback_url: str | None
    idempotency_key: str | None
    request_hash: str
    total: int
    created_at: float
    max_spend_usd: float | None = None  # the batch's own cap; None: only the tenant's caps apply
    on_budget: str = "wait"  # a job held back by a cap: "wait" in queued, or "fail" (budget_exceeded)


@dataclass(frozen=True, slots=True)
class BatchSummary:
    batch: BatchRow
    counts: Mapping[str, int]
    spend_usd: float
    reserved_usd: float = 0.0  # held for jobs whose price is not settled yet

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if State(s).is_terminal)


class TaskRow(msgspec.Struct, frozen=True, gc=False):
    """One upstream task of a job: created by us, adopted from a webhook, or an orphan duplicate."""

    task_id: str
    job_id: str
    attempt: int
    origin: str
    status: str
    created_at: float
    updated_at: float


class TaskUpsert(msgspec.Struct, frozen=True, gc=False):
    task_id: str
    attempt: int
    origin: str  # created | adopted | orphan
    status: str
    run_s: float | None = None  # a final task's run time by the upstream's clock (ended_at - created_at)
    heard_after_s: float | None = None  # from our create to its final webhook


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    job_id: str
    at: float
    event: str
    from_state: str
    to_state: str
    source: str
    detail: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    job_id: str
    idx: int
    sha256: str
    bytes: int
    width: int
    height: int
    path: str
    source_url: str
    content_type: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Change:
    """What a `decide` function wants done to one job, applied atomically.

    `event` None means the state stays (columns still change); the event log gets a row only when
    the state changes or `note` is given. `set` holds what the caller sets over what the event
    resets (`RESETS`).
    """

    event: Event | None
    source: str
    set: Mapping[str, Any] = field(default_factory=dict)
    task: TaskUpsert | None = None
    artifacts: Sequence[ArtifactRow] = ()
    detail: Mapping[str, Any] | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.event is not None and RESETS[self.event]:
            object.__setattr__(self, "set", {**RESETS[self.event], **self.set})


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """The result of `Store.transition`: what the job was and is, and whether anything changed."""

    before: JobRow | None
    after: JobRow | None
    applied: bool

    @property
    def state_changed(self) -> bool:
        return bool(self.applied and self.before and self.after and self.before.state != self.after.state)


DecideFn = Callable[[JobRow | None, TaskRow | None], Change | None]
"""Given the job (and the task a snapshot names) as read inside the write transaction: what to change."""


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    id: str
    tenant: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    asymmetric: bool
    created_at: float
    disabled_at: float | None
    disabled_reason: str | None
    paused: bool = False
    secret_version: int = 0  # 0: signed as the subscription id; n: as `<id>#v<n>`
    previous_secret_until: float | None = None  # the previous version also signs until then
    failing_since: float | None = None  # the first failed attempt since the last delivered one


@dataclass(frozen=True, slots=True)
class SubscriptionChanges:
    """A PATCH of a subscription: None leaves a field as it is."""

    url: str | None = None
    event_types: tuple[str, ...] | None = None
    paused: bool | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event for clients, written in the transaction of the change that causes it."""

    id: str
    tenant: str
    type: str
    batch_id: str  # "" for events about no batch (subscription.disabled, test events)
    job_id: str | None
    payload: str  # the exact JSON body every delivery of this event sends
    created_at: float
    trace_context: str | None = None  # its job's traceparent (a batch's: its last job's)


class DeliveryState(enum.StrEnum):
    #: Due at `next_at` (again, after a failed attempt).
    PENDING = "pending"
    #: The endpoint answered 2xx.
    DELIVERED = "delivered"
    #: Out of retries, refused by the URL policy, or its subscription is disabled.
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One event to one destination, with its delivery state."""

    id: int
    event_id: str
    target: str  # a subscription id, or "batch"
    url: str
    signer: str
    asymmetric: bool
    state: DeliveryState
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    finished_at: float | None
    origin: str = ""  # scheme://host:port, what the per-endpoint limit and the slow-down key on


@dataclass(frozen=True, slots=True)
class DeliveryAttemptRow:
    delivery_id: int
    n: int
    at: float
    status: int | None
    duration_ms: float
    error: str | None


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    delivery: DeliveryRow
    payload: str
    tenant: str
    secret_version: int = 0  # of the subscription (0 for a batch's callback_url)
    previous_secret_until: float | None = None
    trace_context: str | None = None  # the event's, so the delivery's span joins its job's trace


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one delivery attempt ended in, and what happens next."""

    status: int | None
    duration_ms: float
    error: str | None
    outcome: str  # delivered | retry | dead | gone (410: the subscription is disabled)
    next_at: float | None = None
    # The endpoint asked to be left alone (429/502/503/504): pause its origin at least this long,
    # doubling while it keeps asking, up to slow_down_max_s.
    slow_down_s: float | None = None
    slow_down_max_s: float = 0.0
    # A subscription failing (no delivery) for this long is disabled (None: never).
    disable_after_s: float | None = None


# retention (the pruner) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrunedRow:
    """The tombstone of a job or batch the pruner deleted (its 410 Gone answer)."""

    id: str
    tenant: str
    batch_id: str  # "" for a batch
    pruned_at: float


@dataclass(frozen=True, slots=True)
class ExpiredMask:
    job_id: str
    idx: int
    path: str
    created_at: float


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """What a pruning round would delete now (`segflow prune --dry-run`)."""

    masks: int
    mask_bytes: int
    jobs: int
    events: int
    outbox: int
