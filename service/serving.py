"""Serve an ASGI app with uvicorn inside the running event loop, on a socket the caller owns
(port 0 works: the demo and the tests learn the port from the socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@asynccontextmanager
async def serve_in_loop(
    app: Callable[..., Any], *, sock: socket.socket | None = None, start_timeout_s: float = 10.0
) -> AsyncIterator[str]:
    """Serve `app` until the block exits; yields its base URL."""
    sock = sock or bind_socket()
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", log_config=None)
    server = uvicorn.Server(config)
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
