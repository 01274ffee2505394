"""The upstream webhook receiver: POST /webhooks/qubico/{job_id}/{attempt} (and the older
/webhooks/qubico/{job_id}, for tasks created before the attempt was in the path).

Order of checks, cheapest first, so a flood of bad deliveries never reaches the database and costs
no more than a good one: secret present (401), a well-formed job id and attempt (404, before any
HMAC), body size (413), secret valid for this job's attempt under any master key (401, one HMAC per
key), strict decoding (400), segment task (400), then the completion path as one durable
compare-and-set (404 unknown job, 400 foreign task, 503 store down). 200 for accepted, stale and
duplicate deliveries alike, so the upstream stops retrying.
"""

from __future__ import annotations

import time

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.completion import SnapshotRefused, apply_snapshot
from service.context import Services
from service.http_body import BodyTooLarge, BodyTooSlow, read_limited
from service.jobs import Outcome
from service.store import StoreError
from service.upstream.wire import WireError, decode_webhook
from service.webhook_secrets import parse_attempt, well_formed_job_id

log = structlog.get_logger("segflow.webhooks")

_JSON = "application/json"


def _answer(status: int, code: str, services: Services, started: float) -> Response:
    services.metrics.webhooks.labels(outcome=code).inc()
    services.metrics.webhook_seconds.observe(time.perf_counter() - started)
    return Response(b'{"status":"%s"}' % code.encode(), status_code=status, media_type=_JSON)


def _record_span(services: Services, outcome: Outcome, task_id: str, status: str, started_ns: int) -> None:
    """The webhook's span in its job's trace (the job, and so its trace, is known only now)."""
    job = outcome.before
    assert job is not None
    after = outcome.after.state.value if outcome.after else job.state.value
    attributes = {
        "segflow.job.id": job.id,
        "segflow.task.id": task_id,
        "segflow.upstream.status": status,
        "segflow.state": after,
        "segflow.applied": outcome.state_changed,
    }
    services.tracing.record_job_span("segflow.webhook", job.trace_context, start_ns=started_ns, attributes=attributes)


async def receive_webhook(request: Request) -> Response:
    services: Services = request.app.state.services
    started = time.perf_counter()
    started_ns = time.time_ns() if services.tracing.enabled else 0
    job_id: str = request.path_params["job_id"]
    secret = request.headers.get("x-webhook-secret")
    if not secret:
        log.info("webhook_rejected", reason="missing_secret")
        return _answer(401, "unauthorized", services, started)
    raw_attempt: str | None = request.path_params.get("attempt")
    attempt = parse_attempt(raw_attempt) if raw_attempt is not None else None
    legacy = raw_attempt is None and services.settings.legacy_webhook_path
    if not well_formed_job_id(job_id) or (attempt is None and not legacy):
        # Not an endpoint segflow hands out: nothing to look up, and nothing worth an HMAC.
        log.info("webhook_rejected", reason="malformed_path")
        return _answer(404, "unknown_job", services, started)
    try:
        body = await read_limited(request, services.settings.max_webhook_body)
    except BodyTooLarge:
        log.info("webhook_rejected", job_id=job_id, reason="too_large")
        return _answer(413, "too_large", services, started)
    except BodyTooSlow:
        log.info("webhook_rejected", job_id=job_id, reason="too_slow")
        return _answer(408, "too_slow", services, started)
    except ClientDisconnect:
        return _answer(400, "disconnected", services, started)
    if attempt is None:  # an endpoint from before the attempt was in the path
        attempt = services.secrets.attempt_of(job_id, secret, max_attempt=services.settings.max_attempts)
    elif not services.secrets.verify(job_id, attempt, secret):
        attempt = None
    if attempt is None:
        log.info("webhook_rejected", job_id=job_id, reason="wrong_secret")
        return _answer(401, "unauthorized", services, started)
    try:
        delivery = decode_webhook(body)
    except WireError as exc:
        log.info("webhook_rejected", job_id=job_id, reason="malformed", error=str(exc))
        return _answer(400, "malformed", services, started)
    snap = delivery.task
    if not snap.is_segment:
        log.info(
            "webhook_rejected",
            job_id=job_id,
            reason="not_segment",
            model=snap.model,
            task_type=snap.task_type,
        )
        return _answer(400, "not_segment", services, started)
    try:
        outcome = await apply_snapshot(services, job_id, snap, attempt=attempt, source="webhook")
    except SnapshotRefused as exc:
        log.warning("webhook_rejected", job_id=job_id, task_id=snap.task_id, reason="foreign_task", error=str(exc))
        return _answer(400, "foreign_task", services, started)
    except StoreError as exc:
        log.error("webhook_not_durable", job_id=job_id, task_id=snap.task_id, error=str(exc))
        return _answer(503, "unavailable", services, started)
    if outcome.before is None:
        log.info("webhook_rejected", job_id=job_id, reason="unknown_job")
        return _answer(404, "unknown_job", services, started)
    if started_ns:
        _record_span(services, outcome, snap.task_id, snap.raw_status, started_ns)
    if outcome.state_changed and outcome.after is not None:
        log.info(
            "webhook_applied",
            job_id=job_id,
            task_id=snap.task_id,
            status=snap.raw_status,
            state=outcome.after.state.value,
        )
        return _answer(200, "applied", services, started)
    return _answer(200, "unchanged", services, started)
