"""The public REST API: batches and jobs under /v1 (bearer keys, one tenant per key), ops probes,
and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.api.responses import http_error
from service.api.routes import api_routes

__all__ = ["api_routes", "exception_handlers"]

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers() -> dict[type[Exception], ExceptionHandler]:
    """For `Starlette(exception_handlers=...)`: unknown paths and methods answer in the API's
    JSON error shape instead of plain text."""
    return {HTTPException: http_error}
