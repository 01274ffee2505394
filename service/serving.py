"""Serving segflow's ASGI app with uvicorn: one configuration for `segflow serve`, the demo and the
tests, with the connection limits in `[server]`.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
request headers (before the first request, or a client trickling a byte at a time, since every
byte re-arms its idle timer), and it does not cap connections. `guarded_protocol` adds both to
uvicorn's HTTP protocol: a connection gets `header_timeout_s` to deliver a request's headers
whenever no request of it is being handled, at most `max_header_bytes` of them, and connections
past `max_connections` are closed as they are accepted. Request bodies are timed by segflow's
body reader (`http_body`, `body_timeout_s`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import uvicorn

from service.settings import Settings

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop's event loop (uvicorn[standard] installs it; it is what uvicorn itself
    would choose), or on asyncio's where uvloop is not available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _bare_answer(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()


_TIMEOUT = _bare_answer("408 Request Timeout")
_TOO_LARGE = _bare_answer("431 Request Header Fields Too Large")


class HeadersTooLarge(Exception):
    """A request's line and headers passed `max_header_bytes`."""


class _ConnectionGuard:
    """Mixed into a uvicorn HTTP protocol class (h11 or httptools); see the module docstring."""

    header_timeout_s: float
    max_header_bytes: int
    max_connections: int
    # From the uvicorn protocol this is mixed into:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any

    _header_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    _parsed_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            transport.close()  # over the cap: refused before a byte is read
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self._waiting():  # these bytes did not complete a request's headers
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._cut(_TOO_LARGE)
                return
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._watch()

    # httptools' parser callbacks: the request line and headers of one request, counted as they are
    # parsed (one read can hold a whole request; h11 has its own limit, h11_max_incomplete_event_size).
    def on_message_begin(self) -> None:
        self._parsed_bytes = 0
        super().on_message_begin()  # type: ignore[misc]

    def on_url(self, url: bytes) -> None:
        self._parsed(len(url))
        super().on_url(url)  # type: ignore[misc]

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed(len(name) + len(value) + 4)
        super().on_header(name, value)  # type: ignore[misc]

    def _parsed(self, n: int) -> None:
        self._parsed_bytes += n
        if self._parsed_bytes > self.max_header_bytes:
            self._cut(_TOO_LARGE)
            raise HeadersTooLarge  # stops the parser; uvicorn then drops the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _waiting(self) -> bool:
        """No request of this connection is being handled: it owes us the next request's headers."""
        return self.cycle is None or bool(self.cycle.response_complete)

    def _watch(self) -> None:
        if self._waiting():
            if self._header_timer is None and not self.transport.is_closing():
                self._header_timer = self.loop.call_later(self.header_timeout_s, self._cut, _TIMEOUT)
        else:
            self._disarm()
            self._header_bytes = 0

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cut(self, answer: bytes) -> None:
        """Answer (outside any request: nothing else is being written) and close."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol with the connection guard and `settings`' limits."""
    base: type[asyncio.Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        base = HttpToolsProtocol
    except ImportError:  # httptools is optional in uvicorn; h11 always comes with it
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    limits = {
        "header_timeout_s": settings.header_timeout_s,
        "max_header_bytes": settings.max_header_bytes,
        "max_connections": settings.max_connections,
    }
    return type(f"Guarded{base.__name__}", (_ConnectionGuard, base), limits)


def server_config(app: Callable[..., Any], settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every segflow server runs with."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(settings),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        server_header=False,  # what runs here is nobody's business
        access_log=False,
        log_config=None,
        lifespan="on",
        **options,
    )


@asynccontextmanager
async def serve_in_loop(
    app: Callable[..., Any],
    *,
    sock: socket.socket | None = None,
    start_timeout_s: float = 10.0,
    settings: Settings | None = None,
) -> AsyncIterator[str]:
    """Serve `app` inside the running event loop on a socket the caller owns (port 0 works: the
    demo and the tests learn the port from the socket) until the block exits; yields its base URL.
    Limits come from `settings`, else from the app's own services, else the defaults."""
    sock = sock or bind_socket()
    host, port = sock.getsockname()[:2]
    services = getattr(getattr(app, "state", None), "services", None)
    chosen = settings or (services.settings if services is not None else Settings())
    server = uvicorn.Server(server_config(app, chosen, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + start_timeout_s
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        if loop.time() > deadline:
            raise TimeoutError(f"uvicorn did not start within {start_timeout_s} s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
