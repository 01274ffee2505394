"""The events segflow tells its clients about, and their payloads. Pure: the stores call these
inside the transaction that makes the change, so an event exists exactly when its change does.

Each payload is a msgspec Struct: the same type encodes every delivered body and gives the JSON
Schema the OpenAPI document's `webhooks` section publishes (service/api/openapi.py), so the
catalogue cannot drift from what is sent. A new field goes into the Struct and appears in both.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from service.jobs import ArtifactRow, JobRow, OutboxEvent
from service.states import State

JOB_EVENT_TYPES: Mapping[State, str] = {
    State.SUCCEEDED: "job.succeeded",
    State.FAILED: "job.failed",
    State.CANCELLED: "job.cancelled",
    State.EXPIRED: "job.expired",
}
BATCH_COMPLETED = "batch.completed"
SUBSCRIPTION_DISABLED = "subscription.disabled"  # operational: segflow stopped delivering to an endpoint
EVENT_TYPES: tuple[str, ...] = (*JOB_EVENT_TYPES.values(), BATCH_COMPLETED, SUBSCRIPTION_DISABLED)


class PayloadError(msgspec.Struct, kw_only=True):
    code: str
    message: str | None


class PayloadArtifact(msgspec.Struct, kw_only=True):
    sha256: str
    bytes: int
    width: int
    height: int
    url: str  # the API path that serves the mask (with the API key)


class JobEventData(msgspec.Struct, kw_only=True):
    """`data` of the job.* events: the job as it ended."""

    job_id: str
    batch_id: str
    state: str
    attempt: int
    image: str
    prompt: str
    metadata: dict[str, Any] | None
    error: PayloadError | None
    artifact: PayloadArtifact | None
    price_usd: float | None
    finished_at: str


class BatchCompletedData(msgspec.Struct, kw_only=True):
    """`data` of batch.completed: sent once, when the batch's last job is final."""

    batch_id: str
    total: int
    counts: dict[str, int]
    spend_usd: float


class SubscriptionDisabledData(msgspec.Struct, kw_only=True):
    """`data` of subscription.disabled: segflow stopped delivering to this subscription."""

    subscription_id: str
    url: str
    reason: str
    failing_since: str | None
    disabled_at: str


DATA_TYPES: Mapping[str, type[msgspec.Struct]] = {
    **{t: JobEventData for t in JOB_EVENT_TYPES.values()},
    BATCH_COMPLETED: BatchCompletedData,
    SUBSCRIPTION_DISABLED: SubscriptionDisabledData,
}


class Envelope(msgspec.Struct, kw_only=True):
    """Every delivered body: `{"id", "type", "timestamp", "data"}`; `id` is also `webhook-id`."""

    id: str
    type: str
    timestamp: str
    data: JobEventData | BatchCompletedData | SubscriptionDisabledData


_encoder = msgspec.json.Encoder()


def rfc3339(ts: float | None) -> str | None:
    """A unix time as RFC 3339 UTC with milliseconds, as every time segflow shows is written."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(event_id: str, kind: str, now: float, data: msgspec.Struct) -> str:
    assert isinstance(data, DATA_TYPES[kind]), (kind, type(data))
    envelope = Envelope(id=event_id, type=kind, timestamp=rfc3339(now) or "", data=data)  # type: ignore[arg-type]
    return _encoder.encode(envelope).decode()


def job_event(job: JobRow, artifacts: Sequence[ArtifactRow], now: float) -> OutboxEvent | None:
    """The event for a job that has just reached a terminal state (None for other states)."""
    kind = JOB_EVENT_TYPES.get(job.state)
    if kind is None:
        return None
    event_id = f"evt_{uuid.uuid4().hex}"
    first = artifacts[0] if artifacts else None
    data = JobEventData(
        job_id=job.id,
        batch_id=job.batch_id,
        state=job.state.value,
        attempt=job.attempt,
        image=job.image,
        prompt=job.prompt,
        metadata=dict(job.metadata) if job.metadata is not None else None,
        error=PayloadError(code=job.error_code, message=job.error_message) if job.error_code else None,
        artifact=None
        if first is None
        else PayloadArtifact(
            sha256=first.sha256,
            bytes=first.bytes,
            width=first.width,
            height=first.height,
            url=f"/v1/jobs/{job.id}/mask",
        ),
        price_usd=job.price_usd,
        finished_at=rfc3339(job.finished_at or now) or "",
    )
    body = _body(event_id, kind, now, data)
    return OutboxEvent(event_id, job.tenant, kind, job.batch_id, job.id, body, now, job.trace_context)


def batch_completed_event(
    tenant: str,
    batch_id: str,
    counts: Mapping[str, int],
    spend_usd: float,
    now: float,
    trace_context: str | None = None,
) -> OutboxEvent:
    """The event for a batch whose every job is final. Its id is derived from the batch, so a
    second attempt to write it (another replica, a replay of the last change) is a no-op."""
    event_id = f"evt_batch_{batch_id.replace('-', '')}"
    data = BatchCompletedData(
        batch_id=batch_id, total=sum(counts.values()), counts=dict(counts), spend_usd=round(spend_usd, 6)
    )
    body = _body(event_id, BATCH_COMPLETED, now, data)
    return OutboxEvent(event_id, tenant, BATCH_COMPLETED, batch_id, None, body, now, trace_context)


def subscription_disabled_event(
    tenant: str, sub_id: str, url: str, reason: str, failing_since: float | None, now: float
) -> OutboxEvent:
    event_id = f"evt_{uuid.uuid4().hex}"
    data = SubscriptionDisabledData(
        subscription_id=sub_id,
        url=url,
        reason=reason,
        failing_since=rfc3339(failing_since),
        disabled_at=rfc3339(now) or "",
    )
    body = _body(event_id, SUBSCRIPTION_DISABLED, now, data)
    return OutboxEvent(event_id, tenant, SUBSCRIPTION_DISABLED, "", None, body, now)


_EXAMPLE_TS = 1767225600.0  # 2026-01-01T00:00:00Z


def example_data(kind: str) -> msgspec.Struct:
    """A realistic `data` for `kind`: the catalogue's example and the body of a test event."""
    if kind == BATCH_COMPLETED:
        return BatchCompletedData(
            batch_id="00000000-0000-4000-8000-000000000000",
            total=3,
            counts={"succeeded": 2, "failed": 1},
            spend_usd=0.002,
        )
    if kind == SUBSCRIPTION_DISABLED:
        return SubscriptionDisabledData(
            subscription_id="sub_00000000000000000000000000000000",
            url="https://hooks.example.com/segflow",
            reason="failing for 5 days",
            failing_since=rfc3339(_EXAMPLE_TS - 5 * 86400),
            disabled_at=rfc3339(_EXAMPLE_TS) or "",
        )
    state = next(s for s, t in JOB_EVENT_TYPES.items() if t == kind)
    job_id = "00000000-0000-4000-8000-000000000001"
    return JobEventData(
        job_id=job_id,
        batch_id="00000000-0000-4000-8000-000000000000",
        state=state.value,
        attempt=1,
        image="https://images.example.com/street.jpg",
        prompt="car",
        metadata={"order": 42},
        error=PayloadError(code="upstream_failed", message="the upstream task failed")
        if state is State.FAILED
        else None,
        artifact=PayloadArtifact(sha256="9f" * 32, bytes=18_231, width=1024, height=768, url=f"/v1/jobs/{job_id}/mask")
        if state is State.SUCCEEDED
        else None,
        price_usd=0.001 if state is State.SUCCEEDED else None,
        finished_at=rfc3339(_EXAMPLE_TS) or "",
    )


def example_payload(kind: str, event_id: str = "evt_00000000000000000000000000000000") -> dict[str, Any]:
    """The catalogue's example body of `kind`, as delivered."""
    decoded: dict[str, Any] = msgspec.json.decode(_body(event_id, kind, _EXAMPLE_TS, example_data(kind)))
    return decoded


def sample_event(tenant: str, kind: str, now: float) -> OutboxEvent:
    """A signed example of `kind` for POST /v1/subscriptions/{id}/test (its id says it is a test)."""
    event_id = f"evt_test_{uuid.uuid4().hex}"
    return OutboxEvent(event_id, tenant, kind, "", None, _body(event_id, kind, now, example_data(kind)), now)
