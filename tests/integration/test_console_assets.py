"""The console's files come from segflow itself, with headers that keep a page holding an API key
from being framed, sniffed or fed inline script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.api import Api, running_api
from tests.fixtures.segflow import Starter


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


async def test_the_console_and_its_assets_are_served_without_a_key_under_a_strict_policy(api: Api) -> None:
    page = await api.call("GET", "/console", tenant=None)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'src="/console/console.js"' in page.raw and b"<script>" not in page.raw  # no inline script
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = await api.call("GET", f"/console/{name}", tenant=None)
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["content-security-policy"] == policy
        again = await api.call("GET", f"/console/{name}", tenant=None, headers={"if-none-match": asset.headers["etag"]})
        assert again.status == 304 and again.raw == b""
    for missing in ("/console/index.htm", "/console/..%2fapp.py", "/console/nope.js"):
        assert (await api.call("GET", missing, tenant=None)).status == 404, missing


async def test_the_console_reads_nothing_without_a_key(api: Api) -> None:
    assert (await api.call("GET", "/v1/batches", tenant=None)).status == 401
