"""The store interface and its records. SQLite and PostgreSQL implement the same `Store`.

Every change to a job goes through `Store.transition`: the store reads the job (and the upstream
task a snapshot names) inside its write transaction, asks a pure `decide` function what to change,
and writes the change as a compare-and-set together with its event-log row. A webhook, a poll and
another replica racing on one job therefore cannot both win.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.states import Event, State


class StoreError(Exception):
    """The store cannot make a write durable right now (the caller answers 503 and retries)."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused with a different request body."""


@dataclass(frozen=True, slots=True)
class JobInput:
    image: str
    prompt: str
    negative_prompt: str = ""
    segment_factor: int = 0
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
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


JOB_COLUMNS: tuple[str, ...] = tuple(JobRow.__dataclass_fields__)
"""Column order of the jobs table as read by both stores."""

MUTABLE_COLUMNS = frozenset(JOB_COLUMNS) - {
    "id",
    "batch_id",
    "tenant",
    "seq",
    "image",
    "prompt",
    "negative_prompt",
    "segment_factor",
    "metadata",
    "state",
    "created_at",
    "updated_at",
}
"""Columns a `Change` may set; state and updated_at are the store's own."""


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    tenant: str
    callback_url: str | None
    idempotency_key: str | None
    request_hash: str
    total: int
    created_at: float


@dataclass(frozen=True, slots=True)
class BatchSummary:
    batch: BatchRow
    counts: Mapping[str, int]
    spend_usd: float

    @property
    def done(self) -> int:
        return sum(n for s, n in self.counts.items() if State(s).is_terminal)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One upstream task of a job: created by us, adopted from a webhook, or an orphan duplicate."""

    task_id: str
    job_id: str
    attempt: int
    origin: str
    status: str
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class TaskUpsert:
    task_id: str
    attempt: int
    origin: str  # created | adopted | orphan
    status: str


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
    the state changes or `note` is given.
    """

    event: Event | None
    source: str
    set: Mapping[str, Any] = field(default_factory=dict)
    task: TaskUpsert | None = None
    artifacts: Sequence[ArtifactRow] = ()
    detail: Mapping[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of `Store.transition`: what the job was and is, and whether anything changed."""

    before: JobRow | None
    after: JobRow | None
    applied: bool
    result: Any = None

    @property
    def state_changed(self) -> bool:
        return bool(self.applied and self.before and self.after and self.before.state != self.after.state)


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


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: str
    tenant: str
    type: str
    batch_id: str
    job_id: str | None
    payload: str
    created_at: float


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One event to one destination, with its delivery state."""

    id: int
    event_id: str
    target: str  # a subscription id, or "batch"
    url: str
    signer: str
    asymmetric: bool
    state: str  # pending | delivered | dead
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    finished_at: float | None


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


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one delivery attempt ended in, and what happens next."""

    status: int | None
    duration_ms: float
    error: str | None
    outcome: str  # delivered | retry | dead | gone (410: the subscription is disabled)
    next_at: float | None = None


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


class Decision(Protocol):
    def __call__(self, job: JobRow | None, task: TaskRow | None, /) -> Change | None: ...


class Store(Protocol):
    """Everything segflow reads and writes. Implementations: SqliteStore, PostgresStore."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    # API keys
    async def add_api_key(self, tenant: str, key_hash: str, label: str) -> None: ...
    async def tenant_for_key(self, key_hash: str) -> str | None: ...

    # batches
    async def create_batch(
        self,
        tenant: str,
        items: Sequence[JobInput],
        *,
        callback_url: str | None,
        idempotency_key: str | None,
        request_hash: str,
        now: float,
    ) -> tuple[BatchRow, list[JobRow], bool]: ...
    async def get_batch(self, batch_id: str) -> BatchRow | None: ...
    async def batch_summary(self, batch_id: str) -> BatchSummary | None: ...
    async def list_batch_jobs(
        self, batch_id: str, *, state: State | None, after_seq: int, limit: int
    ) -> list[JobRow]: ...
    async def list_batches(self, tenant: str, *, before: tuple[float, str] | None, limit: int) -> list[BatchSummary]:
        """The tenant's batches with their progress, newest first, older than `before`
        (created_at, id) when given."""
        ...

    # jobs
    async def get_job(self, job_id: str) -> JobRow | None: ...
    async def job_tasks(self, job_id: str) -> list[TaskRow]: ...
    async def job_events(self, job_id: str) -> list[EventRow]: ...
    async def job_artifacts(self, job_id: str) -> list[ArtifactRow]: ...
    async def transition(self, job_id: str, decide: Decision, *, task_id: str | None = None) -> Outcome: ...

    # work claims
    async def claim_queued(
        self, owner: str, *, now: float, limit: int, max_in_flight: int, lease_s: float, max_fetch_backlog: int = 0
    ) -> list[JobRow]:
        """Move up to `limit` queued jobs to `submitting`, leased to `owner`: none while
        `max_in_flight` jobs may have a task alive upstream, or while `max_fetch_backlog` jobs wait
        for their mask (0: no such limit)."""
        ...

    async def claim_fetching(self, owner: str, *, now: float, limit: int, lease_s: float) -> list[JobRow]: ...
    async def claim_due(self, *, now: float, limit: int, hold_s: float) -> list[JobRow]: ...
    async def stale_leases(self, *, now: float, limit: int) -> list[JobRow]: ...
    async def aged_jobs(self, *, cutoff: float, limit: int) -> list[JobRow]: ...

    # figures
    async def job_counts(self) -> Mapping[str, int]: ...
    async def flow_counts(self) -> Mapping[str, int]: ...

    # callbacks: subscriptions, the outbox and its deliveries
    async def add_subscription(self, sub: SubscriptionRow) -> None: ...
    async def list_subscriptions(self, tenant: str) -> list[SubscriptionRow]: ...
    async def get_subscription(self, sub_id: str) -> SubscriptionRow | None: ...
    async def delete_subscription(self, tenant: str, sub_id: str) -> bool: ...
    async def list_events(self, tenant: str, *, since: float, limit: int) -> list[OutboxRow]: ...
    async def get_event(self, event_id: str) -> OutboxRow | None: ...
    async def event_deliveries(self, event_id: str) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]: ...
    async def claim_deliveries(
        self, owner: str, *, now: float, limit: int, lease_s: float, per_endpoint: int
    ) -> list[ClaimedDelivery]: ...
    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> None: ...
    async def replay_event(self, event_id: str, *, now: float) -> int: ...
    async def replay_subscription(self, sub_id: str, *, since: float, now: float) -> int: ...
    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]: ...

    # retention (the pruner): small batches, each its own short transaction
    async def pruned_job(self, job_id: str) -> PrunedRow | None: ...
    async def pruned_batch(self, batch_id: str) -> PrunedRow | None: ...
    async def pruned_masks(self, job_id: str) -> dict[int, float]:
        """Mask index -> when its object was deleted, for the job's pruned masks."""
        ...

    async def expired_masks(self, *, cutoff: float, limit: int) -> list[ExpiredMask]:
        """Stored masks written before `cutoff` whose object is not yet deleted, oldest first."""
        ...

    async def mark_masks_pruned(self, masks: Sequence[ExpiredMask], *, now: float) -> None: ...
    async def expired_jobs(self, *, cutoff: float, limit: int) -> tuple[list[str], list[str]]:
        """(ids, mask paths not yet deleted) of final jobs that finished before `cutoff`."""
        ...

    async def delete_jobs(self, job_ids: Sequence[str], *, cutoff: float, now: float) -> int:
        """Delete those still expired with their attempts, events and artifact rows; tombstone each."""
        ...

    async def delete_empty_batches(self, *, cutoff: float, limit: int, now: float) -> int: ...
    async def delete_outbox(self, *, cutoff: float, limit: int) -> int:
        """Delete events created before `cutoff` that nothing is delivering, with their deliveries
        and attempts."""
        ...

    async def live_input_images(self) -> list[str]:
        """Image URLs naming an uploaded input (`/inputs/`) of jobs not yet final."""
        ...

    async def retention_counts(
        self, *, masks_cutoff: float | None, jobs_cutoff: float | None, outbox_cutoff: float | None
    ) -> RetentionCounts: ...


DecideFn = Callable[[JobRow | None, TaskRow | None], Change | None]
