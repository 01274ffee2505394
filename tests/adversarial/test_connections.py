"""Slow and idle connections are timed out and capped (issue 13, finding 5), and the small ones
(finding 6 and 8): answers carry no `server` header, no redirect is built from `Host`.

Raw sockets to segflow on a real loopback port, with short limits so the tests are quick; every
wait is a read with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.fixtures.api import Api, running_api
from tests.fixtures.segflow import TENANT_KEYS, Starter

LIMITS = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keep_alive_s": 1.0, "max_connections": 8}


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    import aiohttp

    app = await segflow("http://127.0.0.1:9", roles=(), allow_private_image_urls=False, **LIMITS)
    async with aiohttp.ClientSession() as http:
        yield Api(app, http)


async def connect(api: Api) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = api.app.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it stays open longer."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_a_connection_that_never_sends_a_request_is_closed(api: Api) -> None:
    reader, writer = await connect(api)
    assert b"408" in await closed_within(reader, 5)
    writer.close()


async def test_headers_trickled_a_byte_at_a_time_are_cut_off(api: Api) -> None:
    reader, writer = await connect(api)
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 400

    sent, answer = 0, b""
    for byte in request:  # one byte every 20 ms: each would re-arm a plain idle timer
        writer.write(bytes([byte]))
        sent += 1
        try:
            answer = await asyncio.wait_for(reader.read(100), 0.02)
            break  # the server spoke (or closed): stop trickling
        except TimeoutError:
            continue
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert sent < len(request) / 2, sent  # cut off long before the headers could have finished
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(api: Api) -> None:
    reader, writer = await connect(api)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert first.startswith(b"HTTP/1.1 200")
    await closed_within(reader, 5)  # nothing more is sent: the idle connection is closed
    writer.close()


async def test_a_body_that_never_arrives_is_answered_408(api: Api) -> None:
    reader, writer = await connect(api)
    writer.write(
        b"POST /v1/batches HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {TENANT_KEYS['acme']}\r\n".encode()
        + b'content-length: 1000\r\n\r\n{"items": ['
    )
    answer = await closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer and b"x-request-id" in answer.lower()
    assert await api.job_count() == 0
    writer.close()


async def test_connections_past_the_cap_are_closed_at_once(api: Api) -> None:
    held = [await connect(api) for _ in range(LIMITS["max_connections"])]
    reader, writer = await connect(api)
    assert await closed_within(reader, 2) == b""  # refused: closed before any answer
    # The connections within the cap still work.
    r0, w0 = held[0]
    w0.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (await asyncio.wait_for(r0.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200")
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_headers_larger_than_the_limit_are_refused(api: Api) -> None:
    reader, writer = await connect(api)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20_000 + b"\r\n\r\n")
    answer = await closed_within(reader, 5)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    writer.close()


async def test_no_server_header_and_no_redirect_built_from_host(segflow: Starter) -> None:
    async with running_api(segflow) as api:
        ok = await api.call("GET", "/healthz", tenant=None)
        assert "server" not in {k.lower() for k in ok.headers}
        for path in ("/v1/batches/", "/healthz/", "/console/"):
            async with api.http.get(
                api.app.url + path,
                headers={"host": "evil.example", "authorization": f"Bearer {TENANT_KEYS['acme']}"},
                allow_redirects=False,
            ) as resp:
                assert "location" not in resp.headers, (path, resp.headers.get("location"))
                assert "evil.example" not in (await resp.text())
                assert "server" not in resp.headers
