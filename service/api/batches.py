"""Batch routes: submit a batch, list the tenant's batches, read a batch's progress, list its jobs."""

from __future__ import annotations

import time
from dataclasses import replace

import structlog
from opentelemetry.trace import Span
from starlette.responses import Response

from service.api import views
from service.api.bodies import decode_batch, idempotency_key, read_json
from service.api.endpoint import Call
from service.api.errors import ApiError, not_found
from service.api.listing import encode_batch_cursor, encode_cursor, parse_batch_listing, parse_listing
from service.api.responses import json_response
from service.callback_events import rfc3339
from service.jobs import BatchRow, JobRow
from service.quotas import charge_batch_request, check_open_jobs
from service.store import IdempotencyConflict
from service.tracing import traceparent

log = structlog.get_logger("segflow.api")


async def create_batch(call: Call) -> Response:
    """POST /v1/batches: store every job of a valid batch as queued, or nothing at all."""
    services = call.services
    key = idempotency_key(call.request)
    await charge_batch_request(services, call.tenant, time.time())  # before the body is even read
    doc = await read_json(call.request, services.settings.max_request_body)
    request = decode_batch(doc, services.settings)
    await check_open_jobs(services, call.tenant, len(request.items))
    spans = services.tracing.start_job_spans(len(request.items))  # none when tracing is off
    items = request.items
    if spans:
        items = tuple(replace(item, trace_context=traceparent(s)) for item, s in zip(items, spans, strict=True))
    jobs: list[JobRow] = []
    try:
        batch, jobs, created = await services.store.create_batch(
            call.tenant,
            items,
            callback_url=request.callback_url,
            idempotency_key=key,
            request_hash=request.request_hash,
            now=time.time(),
            max_spend_usd=request.max_spend_usd,
            on_budget=request.on_budget,
        )
    except IdempotencyConflict:
        raise ApiError(
            409, "idempotency_conflict", "this Idempotency-Key was used with a different request body"
        ) from None
    finally:
        _end_job_spans(spans, jobs, call.tenant)
    if created:
        log.info("batch_created", batch_id=batch.id, jobs=len(jobs))
    else:
        log.info("batch_replayed", batch_id=batch.id)
    # A replay answers as the first call did; the header lets a curious client tell them apart.
    headers = None if created else {"idempotent-replayed": "true"}
    return json_response(views.created_view(batch, jobs), status=202, headers=headers)


def _end_job_spans(spans: list[Span], jobs: list[JobRow], tenant: str) -> None:
    """Name each job span's job; jobs stored by an earlier call with the same key keep their own."""
    for span, job in zip(spans, jobs, strict=False):
        span.set_attributes({"segflow.job.id": job.id, "segflow.batch.id": job.batch_id, "segflow.tenant": tenant})
        if job.trace_context != traceparent(span):
            span.set_attribute("segflow.replayed", True)
    for span in spans:
        span.end()


async def list_batches(call: Call) -> Response:
    """GET /v1/batches: one page of the tenant's batches with their progress, newest first."""
    listing = parse_batch_listing(call.request.query_params)
    # One row more than asked says whether another page exists without a count query.
    found = await call.services.store.list_batches(call.tenant, before=listing.before, limit=listing.limit + 1)
    page = found[: listing.limit]
    last = page[-1].batch if page else None
    next_cursor = encode_batch_cursor(last.created_at, last.id) if last and len(found) > listing.limit else None
    return json_response({"batches": [views.batch_view(s) for s in page], "next_cursor": next_cursor})


async def get_batch(call: Call) -> Response:
    """GET /v1/batches/{batch_id}: progress counts and spend."""
    summary = await call.services.store.batch_summary(call.request.path_params["batch_id"])
    if summary is None:
        await _refuse_pruned(call)
    if summary is None or summary.batch.tenant != call.tenant:
        raise not_found("batch")
    return json_response(views.batch_view(summary))


async def list_batch_jobs(call: Call) -> Response:
    """GET /v1/batches/{batch_id}/jobs: one page of the batch's jobs in submission order."""
    listing = parse_listing(call.request.query_params)
    batch = await owned_batch(call)
    # One row more than asked says whether another page exists without a count query.
    rows = await call.services.store.list_batch_jobs(
        batch.id, state=listing.state, after_seq=listing.after_seq, limit=listing.limit + 1
    )
    page = rows[: listing.limit]
    next_cursor = encode_cursor(page[-1].seq) if len(rows) > listing.limit else None
    return json_response({"jobs": [views.job_summary(j) for j in page], "next_cursor": next_cursor})


async def owned_batch(call: Call) -> BatchRow:
    batch = await call.services.store.get_batch(call.request.path_params["batch_id"])
    if batch is None:
        await _refuse_pruned(call)
    if batch is None or batch.tenant != call.tenant:
        raise not_found("batch")
    return batch


async def _refuse_pruned(call: Call) -> None:
    """410 for the caller's own batch that the retention policy deleted (404 for anyone else's)."""
    pruned = await call.services.store.pruned_batch(call.request.path_params["batch_id"])
    if pruned is not None and pruned.tenant == call.tenant:
        raise ApiError(
            410,
            "batch_pruned",
            "this batch's jobs finished long ago and were deleted by the retention policy "
            "(SEGFLOW_RETENTION_JOBS_DAYS)",
            [{"pruned_at": rfc3339(pruned.pruned_at)}],
        )
