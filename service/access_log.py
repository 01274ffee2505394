"""The access log and the HTTP metrics: one pure ASGI middleware that, for every request, counts it
by method, route template and status, times it to the last byte of the answer, and (unless turned
off) logs one `http_request` event.

The event names the route *template*, never the path or the query string: a webhook's path, a
signed link's query and a key in a URL must not reach a log line. Tenant and request id come from
the request's state, where the API's endpoint wrapper puts them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import UNMATCHED_ROUTE, Metrics

log = structlog.get_logger("segflow.access")


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics, log_requests: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        done = False

        async def send_observed(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            # Timed to the answer's last byte: background work after it is not the client's wait.
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                done = True
                self._observe(scope, status, time.perf_counter() - started)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if not done:  # the app raised (a 500 is sent by the outer middleware) or never answered
                done = True
                self._observe(scope, status or 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED_ROUTE
        method = str(scope.get("method", ""))
        self.metrics.observe_http(method, template, status, seconds)
        if self.log_requests:
            state: dict[str, Any] = scope.get("state") or {}
            log.info(
                "http_request",
                method=method,
                route=template,
                status=status,
                duration_ms=round(seconds * 1000, 2),
                tenant=state.get("tenant"),
                request_id=state.get("request_id") or secrets.token_hex(8),
            )
