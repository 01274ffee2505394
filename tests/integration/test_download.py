"""Mask downloads against a real HTTP server: bounded, image-only, every redirect re-checked."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.download import DownloadGone, DownloadInvalid, DownloadPolicy, DownloadTransient, download_image
from service.serving import serve_in_loop
from service.urlguard import UrlPolicy
from tests.fixtures.sandbox import image_bytes

PNG = image_bytes(64, 48)


def app() -> Starlette:
    async def handler(request: Request) -> Response:
        name = request.path_params["name"]
        answers: dict[str, Response] = {
            "mask.png": Response(PNG, media_type="image/png"),
            "page.png": Response(b"<html></html>", media_type="text/html"),
            "lies.png": Response(b"not really a png", media_type="image/png"),
            "anim.gif": Response(image_bytes(8, 8, "GIF"), media_type="image/gif"),
            "huge.png": Response(PNG + b"\0" * 5000, media_type="image/png"),
            "gone.png": Response(status_code=404),
            "oops.png": Response(status_code=503),
            "hop.png": RedirectResponse("/mask.png", status_code=302),
            "away.png": RedirectResponse(f"http://localhost:{request.url.port}/mask.png", status_code=302),
            "loop.png": RedirectResponse("/loop.png", status_code=302),
        }
        return answers.get(name, Response(status_code=404))

    return Starlette(routes=[Route("/{name}", handler)])


@pytest.fixture
async def host() -> AsyncIterator[str]:
    async with serve_in_loop(app()) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


POLICY = DownloadPolicy(
    urls=UrlPolicy(allow_private=True, https_only=False, allowed_hosts=frozenset({"127.0.0.1"})),
    max_bytes=4096,
    timeout_s=5,
)


async def test_a_png_is_downloaded_with_its_size_and_hash(host: str, http: aiohttp.ClientSession) -> None:
    got = await download_image(http, f"{host}/mask.png", POLICY)
    assert (got.width, got.height, got.sha256) == (64, 48, hashlib.sha256(PNG).hexdigest())


async def test_a_same_host_redirect_is_followed(host: str, http: aiohttp.ClientSession) -> None:
    assert (await download_image(http, f"{host}/hop.png", POLICY)).data == PNG


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        ("page.png", DownloadInvalid, "not an image"),
        ("lies.png", DownloadInvalid, "not a valid image"),
        ("anim.gif", DownloadInvalid, "GIF"),
        ("huge.png", DownloadInvalid, "larger"),
        ("gone.png", DownloadGone, "404"),
        ("oops.png", DownloadTransient, "503"),
        ("away.png", DownloadInvalid, "not an allowed output host"),
        ("loop.png", DownloadInvalid, "too many redirects"),
    ],
)
async def test_bad_outputs_are_refused_with_the_reason(
    host: str, http: aiohttp.ClientSession, name: str, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=re.escape(reason)):
        await download_image(http, f"{host}/{name}", POLICY)


async def test_loopback_is_refused_outside_sandbox_mode(host: str, http: aiohttp.ClientSession) -> None:
    strict = DownloadPolicy(
        urls=UrlPolicy(allow_private=False, https_only=True, allowed_hosts=None), max_bytes=4096, timeout_s=5
    )
    with pytest.raises(DownloadInvalid, match=r"scheme|private"):
        await download_image(http, f"{host}/mask.png", strict)


async def test_a_closed_port_is_transient(http: aiohttp.ClientSession) -> None:
    with pytest.raises(DownloadTransient):
        await download_image(http, "http://127.0.0.1:9/mask.png", POLICY)
