"""How every API route runs: a request id bound to its logs, the caller authenticated, and every
refusal turned into the JSON error body. Routes get a `Call` and raise `ApiError` to refuse."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.api.auth import Authenticator
from service.api.errors import ApiError
from service.api.responses import error_response
from service.context import Services
from service.http_body import BodyTooSlow
from service.store import StoreError

log = structlog.get_logger("segflow.api")

RequestHandler = Callable[[Request], Awaitable[Response]]

# A client's own request id is kept only if it cannot forge log lines or bloat them.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated request: what a route handler works with."""

    request: Request
    services: Services
    tenant: str


CallHandler = Callable[[Call], Awaitable[Response]]


def authed(auth: Authenticator, handler: CallHandler) -> RequestHandler:
    """A route that needs a bearer key; the handler sees the caller's tenant."""

    async def endpoint(request: Request) -> Response:
        services: Services = request.app.state.services
        tenant = await auth.tenant(request, services)
        request.state.tenant = tenant  # for the access log
        with structlog.contextvars.bound_contextvars(tenant=tenant):
            return await handler(Call(request, services, tenant))

    return guarded(endpoint)


def guarded(handler: RequestHandler) -> RequestHandler:
    """Bind a request id, and answer `ApiError` and an unavailable store with the error body."""

    async def endpoint(request: Request) -> Response:
        request_id = _request_id(request)
        request.state.request_id = request_id  # for the access log
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                response = await handler(request)
            except ApiError as exc:
                log.info("api_refused", path=request.url.path, status=exc.status, error=exc.code)
                response = error_response(exc)
            except StoreError as exc:
                log.warning("api_store_unavailable", path=request.url.path, error=str(exc))
                unavailable = ApiError(
                    503,
                    "store_unavailable",
                    "the store cannot answer right now; retry",
                    headers={"retry-after": "1"},
                )
                response = error_response(unavailable)
            except BodyTooSlow:
                log.info("api_body_too_slow", path=request.url.path)
                slow = ApiError(
                    408, "body_timeout", "the request body did not arrive in time", headers={"connection": "close"}
                )
                response = error_response(slow)
            except ClientDisconnect:
                # Nobody is left to read an answer; nothing was stored, since the body was incomplete.
                log.info("api_client_disconnected", path=request.url.path)
                response = Response(status_code=400)
        response.headers["x-request-id"] = request_id
        return response

    return endpoint


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _CLIENT_REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def after_response(func: Callable[..., Awaitable[Any]], *args: Any) -> BackgroundTask:
    """Run `func(*args)` once the answer is sent, with this request's log context (request id,
    tenant) still bound: Starlette runs background work after the route's own context has ended."""
    context = structlog.contextvars.get_contextvars()

    async def run() -> None:
        with structlog.contextvars.bound_contextvars(**context):
            await func(*args)

    return BackgroundTask(run)
