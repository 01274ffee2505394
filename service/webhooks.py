"""The upstream webhook receiver: POST /webhooks/qubico/{job_id}/{attempt} (and the older
/webhooks/qubico/{job_id}, for tasks created before the attempt was in the path).

Order of checks, cheapest first, so a flood of bad deliveries never reaches the database and costs
no more than a good one: secret present (401), a well-formed job id and attempt (404, before any
HMAC), body size (413), secret valid for this job's attempt under any master key (401, one HMAC per
key), strict decoding (400), segment task (400), then the completion path as one durable
compare-and-set (404 unknown job, 400 foreign task, 503 store down). 200 for accepted, stale and
duplicate deliveries alike, so the upstream stops retrying.

It is segflow's hottest path, so it is a plain ASGI endpoint (no Request or Response objects,
the metric children looked up once) whose one timer covers the whole body.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from service.completion import SnapshotRefused, apply_snapshot
from service.context import Services
from service.http_body import BodyTooLarge, BodyTooSlow, receive_limited
from service.jobs import Outcome
from service.store import StoreError
from service.upstream.wire import WireError, decode_webhook
from service.webhook_secrets import parse_attempt, well_formed_job_id

log = structlog.get_logger("segflow.webhooks")


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


class WebhookEndpoint:
    """The endpoint as an ASGI app (Starlette routes an object to it as it is, a function it would
    wrap in a Request): answers `{"status": <outcome>}`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        started = time.perf_counter()
        status, code = await _receive(services, scope, receive)
        body = b'{"status":"%s"}' % code.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        services.metrics.webhook_answered(code, time.perf_counter() - started)


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """The presented secret and the declared content-length."""
    secret = length = None
    for name, value in scope["headers"]:
        if name == b"x-webhook-secret":
            secret = value.decode("latin-1")
        elif name == b"content-length":
            length = value.decode("latin-1")
    return secret, length


async def _receive(services: Services, scope: Scope, receive: Receive) -> tuple[int, str]:
    started_ns = time.time_ns() if services.tracing.enabled else 0
    settings = services.settings
    params: dict[str, Any] = scope["path_params"]
    job_id: str = params["job_id"]
    secret, length = _headers(scope)
    if not secret:
        log.info("webhook_rejected", reason="missing_secret")
        return 401, "unauthorized"
    raw_attempt: str | None = params.get("attempt")
    attempt = parse_attempt(raw_attempt) if raw_attempt is not None else None
    legacy = raw_attempt is None and settings.legacy_webhook_path
    if not well_formed_job_id(job_id) or (attempt is None and not legacy):
        # Not an endpoint segflow hands out: nothing to look up, and nothing worth an HMAC.
        log.info("webhook_rejected", reason="malformed_path")
        return 404, "unknown_job"
    try:
        body = await receive_limited(receive, length, settings.max_webhook_body, settings.body_timeout_s)
    except BodyTooLarge:
        log.info("webhook_rejected", job_id=job_id, reason="too_large")
        return 413, "too_large"
    except BodyTooSlow:
        log.info("webhook_rejected", job_id=job_id, reason="too_slow")
        return 408, "too_slow"
    except ClientDisconnect:
        return 400, "disconnected"
    if attempt is None:  # an endpoint from before the attempt was in the path
        attempt = services.secrets.attempt_of(job_id, secret, max_attempt=settings.max_attempts)
    elif not services.secrets.verify(job_id, attempt, secret):
        attempt = None
    if attempt is None:
        log.info("webhook_rejected", job_id=job_id, reason="wrong_secret")
        return 401, "unauthorized"
    try:
        delivery = decode_webhook(body)
    except WireError as exc:
        log.info("webhook_rejected", job_id=job_id, reason="malformed", error=str(exc))
        return 400, "malformed"
    snap = delivery.task
    if not snap.is_segment:
        log.info(
            "webhook_rejected",
            job_id=job_id,
            reason="not_segment",
            model=snap.model,
            task_type=snap.task_type,
        )
        return 400, "not_segment"
    try:
        outcome = await apply_snapshot(services, job_id, snap, attempt=attempt, source="webhook")
    except SnapshotRefused as exc:
        log.warning("webhook_rejected", job_id=job_id, task_id=snap.task_id, reason="foreign_task", error=str(exc))
        return 400, "foreign_task"
    except StoreError as exc:
        log.error("webhook_not_durable", job_id=job_id, task_id=snap.task_id, error=str(exc))
        return 503, "unavailable"
    if outcome.before is None:
        log.info("webhook_rejected", job_id=job_id, reason="unknown_job")
        return 404, "unknown_job"
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
        return 200, "applied"
    return 200, "unchanged"
