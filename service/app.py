"""The application factory: one Starlette app from its parts; lifespan owns background roles."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.routing import Route

from service.api import api_routes, exception_handlers
from service.console import console_routes
from service.context import Services
from service.webhooks import receive_webhook
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

    routes = [
        Route("/webhooks/qubico/{job_id}/{attempt}", receive_webhook, methods=["POST"]),
        Route("/webhooks/qubico/{job_id}", receive_webhook, methods=["POST"]),  # before attempts were in it
        *api_routes(),
        *console_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers())
    # Starlette's trailing-slash redirect builds its Location from the Host header, which anyone
    # may set: a path that differs by a slash is a 404 like any other unknown path.
    app.router.redirect_slashes = False
    app.state.services = services
    return app
