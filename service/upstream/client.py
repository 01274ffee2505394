"""The upstream client: create, read and cancel segment tasks over one pooled aiohttp session.

Every failure is sorted into the taxonomy of `errors.py`. The line that matters most is between
failures *before* the request left (transient: nothing happened upstream) and *after* it left
(ambiguous for a create: the task may exist, so the caller must not simply send it again).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from service.upstream.errors import (
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTransient,
)
from service.upstream.wire import CreateRequest, TaskSnapshot, WireError, decode_envelope

log = structlog.get_logger("segflow.upstream")

# Raised only while connecting, before a byte of the request was sent.
_BEFORE_SEND = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Raised once the request may have reached the upstream.
_AFTER_SEND = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True)
class UpstreamTimeouts:
    connect_s: float = 5.0
    total_s: float = 30.0


class UpstreamClient:
    """Talks to `base_url` (https://api.piapi.ai, or a sandbox) with header `x-api-key`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeouts: UpstreamTimeouts | None = None,
        pool_size: int = 100,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        max_body_bytes: int = 1_048_576,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeouts = timeouts or UpstreamTimeouts()
        self._pool_size = pool_size
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._trace_configs = list(trace_configs)

    def __repr__(self) -> str:
        return f"UpstreamClient({self.base_url!r}, api_key=[redacted])"

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeouts.total_s, connect=self._timeouts.connect_s)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size),
                timeout=timeout,
                headers={"x-api-key": self._api_key},
                json_serialize=lambda o: orjson.dumps(o).decode(),
                trace_configs=self._trace_configs or None,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> UpstreamClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def create_task(self, req: CreateRequest) -> TaskSnapshot:
        """POST /api/v1/task. Ambiguous failures raise UpstreamAmbiguous."""
        status, body = await self._call("POST", "/api/v1/task", req.to_json(), idempotent=False)
        return self._task(status, body, idempotent=False)

    async def get_task(self, task_id: str) -> TaskSnapshot:
        status, body = await self._call("GET", f"/api/v1/task/{task_id}", None, idempotent=True)
        return self._task(status, body, idempotent=True)

    async def cancel_task(self, task_id: str) -> bool:
        """DELETE /api/v1/task/{id}, best effort: True if accepted, False if the task can't be cancelled."""
        status, body = await self._call("DELETE", f"/api/v1/task/{task_id}", None, idempotent=True)
        if status < 300:
            return True
        if status == 400:
            return False
        raise self._refusal(status, body, None)

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None, *, idempotent: bool
    ) -> tuple[int, bytes]:
        if self._session is None:
            await self.start()
        assert self._session is not None
        started = time.perf_counter()
        after_send = UpstreamTransient if idempotent else UpstreamAmbiguous
        try:
            async with self._session.request(method, self.base_url + path, json=payload) as resp:
                body = await resp.content.read(self._max_body + 1)
                status = resp.status
                retry_after = resp.headers.get("retry-after")
        except _BEFORE_SEND as exc:
            raise UpstreamTransient(f"{method} {path}: could not connect ({type(exc).__name__})") from None
        except _AFTER_SEND as exc:
            raise after_send(f"{method} {path}: {type(exc).__name__} after the request was sent") from None
        log.debug(
            "upstream_request",
            method=method,
            path=path,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        if len(body) > self._max_body:
            raise after_send(f"{method} {path}: answer larger than {self._max_body} bytes")
        if status == 429:
            raise UpstreamRateLimited(_retry_after(retry_after), _message(body))
        if status >= 400 and method != "DELETE":
            raise self._refusal(status, body, retry_after)
        return status, body

    def _refusal(self, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
        message = _message(body)
        if status == 429:
            return UpstreamRateLimited(_retry_after(retry_after), message)
        if status == 404:
            return UpstreamNotFound(status, message)
        if status >= 500:
            return UpstreamTransient(f"upstream answered {status}: {message}")
        return UpstreamRejected(status, message)

    def _task(self, status: int, body: bytes, *, idempotent: bool) -> TaskSnapshot:
        garbage = UpstreamTransient if idempotent else UpstreamAmbiguous
        if status != 200:
            raise garbage(f"unexpected status {status}")
        try:
            return decode_envelope(orjson.loads(body))
        except (orjson.JSONDecodeError, WireError) as exc:
            what = str(exc) if isinstance(exc, WireError) else "not JSON"
            raise garbage(f"undecodable answer: {what}") from None


def _message(body: bytes) -> str:
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace")
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        return str(decoded["message"])[:500]
    return ""


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86_400 else None
