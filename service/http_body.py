"""Reading request bodies with a size limit, checked before and while reading, and a time limit
for the whole body (so a client trickling bytes cannot hold a request open)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive


class BodyTooLarge(Exception):
    """The body is (or declares itself) larger than the limit; nothing past it was read."""


class BodyTooSlow(Exception):
    """The body did not arrive within the time allowed for it."""


def _body_timeout(request: Request) -> float:
    services = getattr(request.app.state, "services", None)
    return float(services.settings.body_timeout_s) if services is not None else 60.0


async def stream_limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks; BodyTooLarge as soon as it passes `limit` bytes, BodyTooSlow once the
    whole body has taken longer than `[server] body_timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    deadline = asyncio.get_running_loop().time() + _body_timeout(request)
    chunks = request.stream().__aiter__()
    size = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BodyTooSlow from None
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        yield chunk


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes `limit` bytes (BodyTooSlow, see above)."""
    return await receive_limited(request.receive, request.headers.get("content-length"), limit, _body_timeout(request))


async def receive_limited(receive: Receive, declared: str | None, limit: int, timeout_s: float) -> bytes:
    """The whole body from an ASGI `receive`, given its declared content-length: BodyTooLarge as
    soon as it passes `limit` bytes, BodyTooSlow after `timeout_s`, ClientDisconnect if the client
    goes. One timer for the whole body, not one per chunk (the webhook's body is one chunk)."""
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientDisconnect
                chunk: bytes = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise BodyTooSlow from None
