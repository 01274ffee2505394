"""The JSON shapes the API answers with, built from store rows. Times are RFC 3339 UTC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.callback_events import rfc3339
from service.jobs import ArtifactRow, BatchRow, BatchSummary, EventRow, JobRow, TaskRow
from service.states import State


def mask_url(job_id: str, idx: int = 0) -> str:
    base = f"/v1/jobs/{job_id}/mask"
    return base if idx == 0 else f"{base}?index={idx}"


def _error(job: JobRow) -> dict[str, str] | None:
    if job.error_code is None:
        return None
    return {"code": job.error_code, "message": job.error_message or ""}


def job_summary(job: JobRow) -> dict[str, Any]:
    """A job as listed in a batch: enough to act on without reading each job."""
    return {
        "job_id": job.id,
        "state": job.state.value,
        "image": job.image,
        "prompt": job.prompt,
        "attempt": job.attempt,
        "error": _error(job),
        "mask_url": mask_url(job.id) if job.state is State.SUCCEEDED else None,
        "price_usd": job.price_usd,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "finished_at": rfc3339(job.finished_at),
    }


def attempt_view(task: TaskRow) -> dict[str, Any]:
    return {
        "attempt": task.attempt,
        "task_id": task.task_id,
        "origin": task.origin,
        "status": task.status,
        "created_at": rfc3339(task.created_at),
    }


def event_view(event: EventRow) -> dict[str, Any]:
    return {
        "at": rfc3339(event.at),
        "event": event.event,
        "from": event.from_state or None,  # the job's first event ("accepted") comes from no state
        "to": event.to_state,
        "source": event.source,
        "detail": dict(event.detail) if event.detail is not None else None,
    }


def artifact_view(
    artifact: ArtifactRow, download_url: str | None = None, pruned_at: float | None = None
) -> dict[str, Any]:
    """A stored mask: `url` needs the API key; `download_url` is a signed, expiring link that needs
    none (null once the retention policy deleted the mask, at `pruned_at`)."""
    return {
        "sha256": artifact.sha256,
        "bytes": artifact.bytes,
        "width": artifact.width,
        "height": artifact.height,
        "url": mask_url(artifact.job_id, artifact.idx),
        "download_url": None if pruned_at is not None else download_url,
        "pruned_at": rfc3339(pruned_at),
    }


def job_view(
    job: JobRow,
    tasks: Sequence[TaskRow],
    events: Sequence[EventRow],
    artifacts: Sequence[ArtifactRow],
    *,
    links: Mapping[int, str] | None = None,
    pruned: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """A job in full: its request, every attempt, its timeline and its mask."""
    view: dict[str, Any] = {
        "job_id": job.id,
        "batch_id": job.batch_id,
        "state": job.state.value,
        "image": job.image,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "segment_factor": job.segment_factor,
        "metadata": dict(job.metadata) if job.metadata is not None else None,
        "attempt": job.attempt,
        "attempts": [attempt_view(t) for t in tasks],
        "timeline": [event_view(e) for e in events],
        "error": _error(job),
        "artifact": _artifact(artifacts[0], links, pruned) if artifacts else None,
        "price_usd": job.price_usd,
        "estimate_usd": job.est_usd,
        "reserved_usd": job.reserved_usd,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "finished_at": rfc3339(job.finished_at),
    }
    if len(artifacts) > 1:
        view["artifacts"] = [_artifact(a, links, pruned) for a in artifacts]
    return view


def _artifact(a: ArtifactRow, links: Mapping[int, str] | None, pruned: Mapping[int, float] | None) -> dict[str, Any]:
    return artifact_view(a, (links or {}).get(a.idx), (pruned or {}).get(a.idx))


def batch_view(summary: BatchSummary) -> dict[str, Any]:
    """A batch's progress: every state counted, zeros included, so clients need no defaults."""
    batch = summary.batch
    return {
        "batch_id": batch.id,
        "created_at": rfc3339(batch.created_at),
        "total": batch.total,
        "counts": {s.value: int(summary.counts.get(s.value, 0)) for s in State},
        "done": summary.done,
        "spend_usd": summary.spend_usd,
        "reserved_usd": summary.reserved_usd,
        "max_spend_usd": batch.max_spend_usd,
        "on_budget": batch.on_budget,
        "callback_url": batch.callback_url,
    }


def created_view(batch: BatchRow, jobs: Sequence[JobRow]) -> dict[str, Any]:
    return {"batch_id": batch.id, "jobs": [{"job_id": j.id, "state": j.state.value} for j in jobs]}
