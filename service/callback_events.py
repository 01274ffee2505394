"""The events segflow tells its clients about, and their payloads. Pure: the stores call these
inside the transaction that makes the change, so an event exists exactly when its change does."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from service.jobs import ArtifactRow, JobRow, OutboxEvent
from service.states import State

JOB_EVENT_TYPES: Mapping[State, str] = {
    State.SUCCEEDED: "job.succeeded",
    State.FAILED: "job.failed",
    State.CANCELLED: "job.cancelled",
    State.EXPIRED: "job.expired",
}
BATCH_COMPLETED = "batch.completed"
EVENT_TYPES: tuple[str, ...] = (*JOB_EVENT_TYPES.values(), BATCH_COMPLETED)


def rfc3339(ts: float | None) -> str | None:
    """A unix time as RFC 3339 UTC with milliseconds, as every time segflow shows is written."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _body(event_id: str, kind: str, now: float, data: Mapping[str, Any]) -> str:
    return orjson.dumps({"id": event_id, "type": kind, "timestamp": rfc3339(now), "data": data}).decode()


def job_event(job: JobRow, artifacts: Sequence[ArtifactRow], now: float) -> OutboxEvent | None:
    """The event for a job that has just reached a terminal state (None for other states)."""
    kind = JOB_EVENT_TYPES.get(job.state)
    if kind is None:
        return None
    event_id = f"evt_{uuid.uuid4().hex}"
    first = artifacts[0] if artifacts else None
    data = {
        "job_id": job.id,
        "batch_id": job.batch_id,
        "state": job.state.value,
        "attempt": job.attempt,
        "image": job.image,
        "prompt": job.prompt,
        "metadata": dict(job.metadata) if job.metadata is not None else None,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        "artifact": None
        if first is None
        else {
            "sha256": first.sha256,
            "bytes": first.bytes,
            "width": first.width,
            "height": first.height,
            "url": f"/v1/jobs/{job.id}/mask",
        },
        "price_usd": job.price_usd,
        "finished_at": rfc3339(job.finished_at or now),
    }
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
    data = {
        "batch_id": batch_id,
        "total": sum(counts.values()),
        "counts": dict(counts),
        "spend_usd": round(spend_usd, 6),
    }
    body = _body(event_id, BATCH_COMPLETED, now, data)
    return OutboxEvent(event_id, tenant, BATCH_COMPLETED, batch_id, None, body, now, trace_context)
