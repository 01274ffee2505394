"""The application factory: one Starlette app from its parts; lifespan owns background roles."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.routing import Route

from service.access_log import AccessLog
from service.api import api_routes, exception_handlers
from service.api.routes import metrics_route
from service.console import console_routes
from service.context import Services
from service.webhooks import WebhookEndpoint
from service.workers import Roles


def create_app(services: Services, *, roles: Sequence[str] = ()) -> Starlette:
    """The segflow HTTP app (API and webhook receiver); `roles` are background workers it runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        running = Roles(services, roles)
        await running.start()
        try:
            yield
        finally:
            await running.stop()

    webhook = WebhookEndpoint()
    routes = [
        Route("/webhooks/qubico/{job_id}/{attempt}", webhook, methods=["POST"]),
        Route("/webhooks/qubico/{job_id}", webhook, methods=["POST"]),  # before attempts were in it
        # With SEGFLOW_METRICS_PORT, /metrics is on its own listener (metrics_app), not here.
        *api_routes(metrics=not services.settings.metrics_port),
        *console_routes(),
    ]
    return _observed(Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers()), services)


def metrics_app(services: Services) -> Starlette:
    """/metrics alone, for the listener on SEGFLOW_METRICS_PORT (HTTP and worker processes alike)."""
    return _observed(Starlette(routes=[metrics_route()]), services)


def _observed(app: Starlette, services: Services) -> Starlette:
    """Access log and HTTP metrics inside, tracing's server spans (when on) outermost."""
    # Starlette's trailing-slash redirect builds its Location from the Host header, which anyone
    # may set: a path that differs by a slash is a 404 like any other unknown path.
    app.router.redirect_slashes = False
    s = services.settings
    # Decided once: below the configured level the event would be dropped, so skip building it.
    log_requests = s.access_log and s.log_level.lower() in ("debug", "info")
    app.add_middleware(AccessLog, metrics=services.metrics, log_requests=log_requests)
    services.tracing.instrument_app(app)
    app.state.services = services
    return app
