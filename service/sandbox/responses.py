"""The answers: the provider's envelope, and the damaged answers of the create_lost/create_hold faults."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.sandbox.limits import retry_after_header
from service.sandbox.wire import SandboxError


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def success(data: Any) -> JSONBody:
    return JSONBody({"code": 200, "data": data, "message": "success"})


def failure(exc: SandboxError) -> JSONBody:
    headers = None
    if exc.retry_after_s is not None:
        headers = {"retry-after": retry_after_header(exc.retry_after_s)}
    return JSONBody({"code": exc.status, "data": None, "message": exc.message}, exc.status, headers)


class ResponseLost(Exception):
    """Raised after the headers went out: the server then drops the connection mid-body."""


class LostResponse(JSONBody):
    """Status line, headers and half the body, then the connection is cut: the client cannot know
    whether its task exists."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": bytes(self.body[: len(self.body) // 2]), "more_body": True})
        # Raising is the only way ASGI lets an app make the server abort a started response.
        raise ResponseLost("create answer cut on purpose (create_lost fault)")


class HeldResponse(JSONBody):
    """The normal answer, sent only after `hold_s` (past the client's timeout); a client that gives up
    earlier gets nothing."""

    def __init__(self, content: Any, *, hold_s: float, released: asyncio.Event) -> None:
        super().__init__(content)
        self._hold_s = hold_s
        self._released = released

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await _client_left_while_holding(receive, self._hold_s, self._released):
            return
        await super().__call__(scope, receive, send)


async def _client_left_while_holding(receive: Receive, hold_s: float, released: asyncio.Event) -> bool:
    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    waiters = [asyncio.ensure_future(disconnect()), asyncio.ensure_future(released.wait())]
    try:
        done, _ = await asyncio.wait(waiters, timeout=hold_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return waiters[0] in done


class HideLostResponses(logging.Filter):
    """Keeps uvicorn from logging a traceback for every answer the create_lost fault cuts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


def plain(status: int, text: str) -> Response:
    return Response(text, status, media_type="text/plain")
