"""The preflight reads only the start of an image, with one range request, through the URL policy."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.preflight import HEAD_BYTES, SharedPreflights, check_image, image_hop_check, preflight
from tests.fixtures.sandbox import image_bytes
from tests.fixtures.segflow import TENANT_KEYS
from tests.fixtures.servers import serve_asgi

AUTH = {"authorization": f"Bearer {TENANT_KEYS['acme']}"}


def big_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2000, 1500), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue() + b"\x00" * 8_000_000  # trailing bytes a whole download would read


async def test_one_bounded_range_request_learns_the_size() -> None:
    seen: list[str | None] = []
    body = big_png()

    async def image(request: Request) -> Response:
        seen.append(request.headers.get("range"))
        return Response(body[:HEAD_BYTES], status_code=206, media_type="image/png")

    async def moved(_request: Request) -> Response:
        return Response(status_code=302, headers={"location": "/image.png"})

    app = Starlette(routes=[Route("/image.png", image), Route("/old.png", moved)])
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        found = await preflight(http, f"{url}/old.png", image_hop_check(True), timeout_s=5.0)
    assert (found.width, found.height, found.estimate_usd) == (2000, 1500, 0.03)
    assert seen == [f"bytes=0-{HEAD_BYTES - 1}"]


async def test_a_server_ignoring_the_range_is_read_only_as_far_as_needed() -> None:
    body = big_png()

    async def image(_request: Request) -> Response:
        return Response(body, media_type="image/png")

    app = Starlette(routes=[Route("/image.png", image)])
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        found = await preflight(http, f"{url}/image.png", image_hop_check(True), timeout_s=5.0)
    assert found.pixels == 3_000_000


async def test_a_private_image_url_is_refused_by_the_policy_before_any_request() -> None:
    async with aiohttp.ClientSession() as http:
        found = await preflight(http, "http://10.0.0.1/i.png", image_hop_check(False), timeout_s=1.0)
    assert found.refused is not None and "private" in found.refused


@pytest.mark.parametrize("backend", ["local", "s3"])
async def test_an_uploaded_input_is_read_from_the_artifact_backend_not_over_http(
    backend: str, segflow: Any, request: pytest.FixtureRequest
) -> None:
    # public_url names a closed loopback port: a preflight that went over HTTP would learn nothing.
    storage = request.getfixturevalue("s3").settings if backend == "s3" else {}
    sf = await segflow("http://127.0.0.1:9", roles=(), public_url="http://127.0.0.1:9", **storage)
    async with aiohttp.ClientSession() as http:
        png = image_bytes(40, 30)
        async with http.post(f"{sf.url}/v1/inputs", data=png, headers={**AUTH, "content-type": "image/png"}) as r:
            assert r.status == 201
            url = (await r.json())["url"]
        found = await check_image(sf.services, http, url)
        missing = await check_image(sf.services, http, url.replace(url.rsplit("/", 1)[1], f"{'0' * 64}.png"))
    assert url.startswith("http://127.0.0.1:9/inputs/")
    assert (found.width, found.height, found.refused) == (40, 30, None)
    assert (missing.width, missing.height) == (None, None)  # not stored: the HTTP attempt learns nothing


async def test_overlapping_preflights_of_one_image_share_one_read_and_a_later_one_reads_again(segflow: Any) -> None:
    reads = 0
    started, release = asyncio.Event(), asyncio.Event()
    body = image_bytes(40, 30)

    async def image(_request: Request) -> Response:
        nonlocal reads
        reads += 1
        started.set()
        await release.wait()
        return Response(body, media_type="image/png")

    app = Starlette(routes=[Route("/image.png", image)])
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        shared = SharedPreflights(sf.services, lambda: http)
        first = [asyncio.create_task(shared.check(f"{url}/image.png")) for _ in range(5)]
        await started.wait()
        first[0].cancel()  # one job giving up does not cancel the read the others wait for
        release.set()
        found = await asyncio.gather(*first[1:])
        later = await shared.check(f"{url}/image.png")
    assert reads == 2
    assert [(f.width, f.height) for f in [*found, later]] == [(40, 30)] * 5
