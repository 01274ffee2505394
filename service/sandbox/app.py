"""The sandbox app factory: routes plus a lifespan that owns the engine's background work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette

from service.sandbox.api import api_routes
from service.sandbox.engine import SandboxEngine
from service.sandbox.files import file_routes
from service.sandbox.introspection import introspection_routes
from service.sandbox.responses import HideLostResponses
from service.sandbox.settings import SandboxSettings

_MAX_BODY_BYTES = 1024 * 1024


def create_sandbox_app(settings: SandboxSettings) -> Starlette:
    """A Starlette app serving the sandbox; `app.state.sandbox` is its live SandboxEngine."""
    engine = SandboxEngine(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        uvicorn_errors = logging.getLogger("uvicorn.error")
        hide = HideLostResponses()
        uvicorn_errors.addFilter(hide)
        log = structlog.get_logger("segflow.sandbox")
        await engine.start()
        log.info("sandbox_started", url=settings.base_url, seed=settings.seed)
        try:
            yield
        finally:
            await engine.stop()
            uvicorn_errors.removeFilter(hide)
            log.info("sandbox_stopped", tasks=len(engine.tasks))

    app = Starlette(
        routes=[*api_routes(), *file_routes(), *introspection_routes()],
        lifespan=lifespan,
        max_body_size=_MAX_BODY_BYTES,
    )
    app.state.sandbox = engine
    return app
