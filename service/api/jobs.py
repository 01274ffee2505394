"""Job routes: read a job, its timeline and its mask; cancel it; retry it."""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from service.api import views
from service.api.downloads import inert_headers, serve_mask
from service.api.endpoint import Call, after_response
from service.api.errors import ApiError, Problem, invalid, not_found
from service.api.responses import json_response
from service.callback_events import rfc3339
from service.context import Services
from service.job_actions import ActionRefused, cancel_job, cancel_upstream, retry_job
from service.jobs import JobRow

_REFUSALS = {
    "not_cancellable": "the job is {state}: only jobs not yet fetching their mask can be cancelled",
    "not_retryable": "the job is {state}: only failed jobs can be retried",
    "retry_limit": "the job has used every attempt it may make",
    "upstream_refused": "the upstream would not cancel the task ({reason}); the job keeps running",
    "upstream_unavailable": "the upstream could not be asked to cancel the task ({reason}); the job keeps running",
}


async def get_job(call: Call) -> Response:
    """GET /v1/jobs/{job_id}: the job with its attempts, timeline and mask."""
    job = await owned_job(call)
    return json_response(await full_view(call.services, job))


async def job_events(call: Call) -> Response:
    """GET /v1/jobs/{job_id}/events: the timeline alone."""
    job = await owned_job(call)
    events = await call.services.store.job_events(job.id)
    return json_response({"job_id": job.id, "timeline": [views.event_view(e) for e in events]})


async def job_mask(call: Call) -> Response:
    """GET /v1/jobs/{job_id}/mask: the stored PNG (`?index=` picks another mask of the job)."""
    index = _mask_index(call.request.query_params.get("index"))
    job = await owned_job(call)
    artifacts = await call.services.store.job_artifacts(job.id)
    found = next((a for a in artifacts if a.idx == index), None)
    if found is None:
        raise ApiError(
            404,
            "mask_not_ready",
            f"no mask stored yet; the job is {job.state.value}",
            [{"state": job.state.value}],
        )
    headers = inert_headers(f"{job.id}-{index}.png") | {"cache-control": "private, max-age=86400"}
    return await serve_mask(call.services, found, headers=headers)


async def cancel(call: Call) -> Response:
    """POST /v1/jobs/{job_id}/cancel."""
    try:
        done = await cancel_job(call.services, call.tenant, call.request.path_params["job_id"])
    except ActionRefused as refused:
        raise _refusal(refused) from None
    # A task that may exist for a job cancelled before its task was known: stopping it is best
    # effort and may be slow, so it runs after the answer (the cancel is durable already).
    task_id = done.task_to_stop
    later = after_response(cancel_upstream, call.services, task_id) if task_id else None
    return json_response(await full_view(call.services, done.job), background=later)


async def retry(call: Call) -> Response:
    """POST /v1/jobs/{job_id}/retry."""
    try:
        outcome = await retry_job(call.services, call.tenant, call.request.path_params["job_id"])
    except ActionRefused as refused:
        raise _refusal(refused) from None
    assert outcome.after is not None
    return json_response(await full_view(call.services, outcome.after))


async def owned_job(call: Call) -> JobRow:
    job_id = call.request.path_params["job_id"]
    job = await call.services.store.get_job(job_id)
    if job is None:
        pruned = await call.services.store.pruned_job(job_id)
        if pruned is not None and pruned.tenant == call.tenant:
            raise job_gone(pruned.pruned_at)
    if job is None or job.tenant != call.tenant:
        raise not_found("job")
    return job


def job_gone(pruned_at: float) -> ApiError:
    return ApiError(
        410,
        "job_pruned",
        "this job finished long ago and was deleted by the retention policy (SEGFLOW_RETENTION_JOBS_DAYS), "
        "with its timeline and mask",
        [{"pruned_at": rfc3339(pruned_at)}],
    )


async def full_view(services: Services, job: JobRow) -> dict[str, object]:
    store = services.store
    tasks, events, artifacts = await asyncio.gather(
        store.job_tasks(job.id), store.job_events(job.id), store.job_artifacts(job.id)
    )
    pruned = await store.pruned_masks(job.id) if artifacts else {}
    links = {a.idx: services.links.mask_url(job.id, a.idx) for a in artifacts}
    return views.job_view(job, tasks, events, artifacts, links=links, pruned=pruned)


def _refusal(refused: ActionRefused) -> ApiError:
    if refused.code == "not_found" or refused.job is None:
        return not_found("job")
    state = refused.job.state.value
    status = 503 if refused.code == "upstream_unavailable" else 409
    message = _REFUSALS[refused.code].format(state=state, reason=refused.reason or "no reason given")
    detail: dict[str, str] = {"state": state}
    if refused.reason:
        detail["reason"] = refused.reason
    return ApiError(status, refused.code, message, [detail])


def _mask_index(raw: str | None) -> int:
    if raw is None:
        return 0
    if raw.isascii() and raw.isdigit() and len(raw) <= 4:
        return int(raw)
    raise invalid([Problem("index", "must be a non-negative integer")])
