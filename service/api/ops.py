"""Operational routes, open without a key: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import structlog
from starlette.requests import Request
from starlette.responses import Response

from service.api.errors import ApiError
from service.api.responses import json_response
from service.context import Services

log = structlog.get_logger("segflow.api")

READY_TIMEOUT_S = 2.0
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


async def healthz(_request: Request) -> Response:
    """The process serves requests; says nothing about its dependencies."""
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the store answers within READY_TIMEOUT_S: a load balancer stops sending otherwise."""
    services: Services = request.app.state.services
    try:
        await asyncio.wait_for(services.store.ping(), READY_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, "not_ready", f"the store did not answer within {READY_TIMEOUT_S:g} s") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the probe means not ready; it is logged
        log.warning("readiness_failed", error_class=type(exc).__name__, error=str(exc))
        raise ApiError(503, "not_ready", "the store is not answering") from None
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus text: this process's counters, and the store-wide gauges read now (if the store
    cannot answer in time, the rest is still served, with segflow_store_up 0)."""
    services: Services = request.app.state.services
    try:
        await asyncio.wait_for(services.metrics.refresh(services.store), READY_TIMEOUT_S)
        services.metrics.store_up.set(1)
    except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the store does; it is logged
        services.metrics.store_up.set(0)
        log.warning("metrics_store_unavailable", error_class=type(exc).__name__, error=str(exc))
    body = await asyncio.to_thread(services.metrics.render)
    return Response(body, media_type=PROMETHEUS_TEXT)
