"""The upstream client: create, read and cancel segment tasks over one pooled aiohttp session.

Every failure is sorted into the taxonomy of `errors.py`. The line that matters most is between
failures *before* the request left (transient: nothing happened upstream) and *after* it left
(ambiguous for a create: the task may exist, so the caller must not simply send it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

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
from service.upstream.wire import (
    AccountInfo,
    CreateRequest,
    HistoryPage,
    TaskSnapshot,
    WireError,
    decode_account,
    decode_envelope_bytes,
    decode_history,
    envelope_error,
)

log = structlog.get_logger("segflow.upstream")
_T = TypeVar("_T")

# Raised only while connecting, before a byte of the request was sent.
_BEFORE_SEND = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Raised once the request may have reached the upstream.
_AFTER_SEND = (aiohttp.ClientError, TimeoutError)


MAX_PAGE_SIZE = 100
"""The history endpoint's documented largest page; more is an error upstream, so refused here."""
HISTORY_MODEL = "image_toolkit"
_JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class CancelAnswer:
    """What the upstream said to a cancel: accepted, or refused with its reason (the task is
    past `pending`, or unknown)."""

    accepted: bool
    reason: str


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

    async def cancel_task(self, task_id: str) -> CancelAnswer:
        """DELETE /api/v1/task/{id}. Only a pending task can be cancelled; the documented answer is
        `{"code": 200, "message": "task <id> canceled"}` with no `data`. A 4xx other than 401/403/429
        (or an envelope error code) is a refusal with the provider's reason; 429 and 5xx raise."""
        status, body = await self._call("DELETE", f"/api/v1/task/{task_id}", None, idempotent=True)
        refused = envelope_error(body)
        if status < 300 and refused is None:
            return CancelAnswer(True, _message(body))
        if status < 300 and refused is not None:
            status = refused[0] if 400 <= refused[0] < 600 else 400
        if status in (401, 403, 429) or status >= 500:
            raise self._refusal(status, body, None)
        return CancelAnswer(False, _message(body) or f"refused with {status}")

    async def list_tasks(
        self, start: float, end: float, *, page: int = 1, page_size: int = MAX_PAGE_SIZE
    ) -> HistoryPage:
        """GET /api/open/tasks/histories: one page of this account's segment tasks created between
        `start` and `end` (unix seconds). `page_size` above 100 is refused before anything is sent."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be in 1..{MAX_PAGE_SIZE}")
        if page < 1:
            raise ValueError("page must be >= 1")
        query = urlencode(
            {
                "page": page,
                "page_size": page_size,
                "model": HISTORY_MODEL,
                "start_time": int(start),
                "end_time": int(end),
            }
        )
        status, body = await self._call("GET", f"/api/open/tasks/histories?{query}", None, idempotent=True)
        return self._decoded(status, body, decode_history)

    async def account_info(self) -> AccountInfo:
        """GET /account/info: the account and its usable balance (`equivalent_in_usd`)."""
        status, body = await self._call("GET", "/account/info", None, idempotent=True)
        return self._decoded(status, body, decode_account)

    async def _call(
        self, method: str, path: str, payload: dict[str, Any] | None, *, idempotent: bool
    ) -> tuple[int, bytes]:
        if self._session is None:
            await self.start()
        assert self._session is not None
        started = time.perf_counter()
        after_send = UpstreamTransient if idempotent else UpstreamAmbiguous
        try:
            # Encoded once, to bytes (aiohttp's json= would encode to str, then that str to bytes).
            data, headers = (None, None) if payload is None else (orjson.dumps(payload), _JSON_HEADERS)
            async with self._session.request(method, self.base_url + path, data=data, headers=headers) as resp:
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
        return self._decoded(status, body, decode_envelope_bytes, idempotent=idempotent)

    def _decoded(self, status: int, body: bytes, decode: Callable[[bytes], _T], *, idempotent: bool = True) -> _T:
        """A 200's body, decoded. An envelope error code without data is sorted like an HTTP status
        (a refused create is then known not to exist, never ambiguous); garbage is transient for a
        read and ambiguous for a create (the task may exist)."""
        garbage = UpstreamTransient if idempotent else UpstreamAmbiguous
        if status != 200:
            raise garbage(f"unexpected status {status}")
        try:
            return decode(body)
        except WireError as exc:
            refused = envelope_error(body)
            if refused is not None:
                raise self._refusal(_as_http_status(refused[0]), body, None) from None
            raise garbage(f"undecodable answer: {exc}") from None


def _as_http_status(code: int) -> int:
    """An envelope code as an HTTP status: codes in 400..599 are one; anything else (the provider's
    own numbers such as 10000) says "not done" without saying why, so it is retried as a 503."""
    return code if 400 <= code < 600 else 503


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
