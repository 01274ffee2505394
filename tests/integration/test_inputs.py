"""Uploaded input images: stored under their hash and served to the upstream."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.fixtures.sandbox import image_bytes
from tests.fixtures.segflow import TENANT_KEYS

AUTH = {"authorization": f"Bearer {TENANT_KEYS['acme']}"}


async def test_upload_serves_the_same_bytes_at_the_returned_url(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    png = image_bytes(40, 30)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sf.url}/v1/inputs", data=png, headers={**AUTH, "content-type": "image/png"}) as r:
            assert r.status == 201
            url = (await r.json())["url"]
        async with http.post(f"{sf.url}/v1/inputs", data=png, headers={**AUTH, "content-type": "image/png"}) as r:
            assert (await r.json())["url"] == url  # the same image is stored once, under one name
        async with http.get(url) as r:
            assert r.status == 200 and r.content_type == "image/png" and await r.read() == png


async def test_bad_uploads_are_refused(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sf.url}/v1/inputs", data=image_bytes(8, 8, "GIF"), headers=AUTH) as r:
            assert r.status == 422
        async with http.post(f"{sf.url}/v1/inputs", data=image_bytes(4000, 8), headers=AUTH) as r:
            assert r.status == 422 and "3072" in (await r.json())["message"]
        async with http.post(f"{sf.url}/v1/inputs", data=b"x", headers={**AUTH, "content-length": "999999999"}) as r:
            assert r.status == 413
        async with http.post(f"{sf.url}/v1/inputs", data=image_bytes(8, 8)) as r:
            assert r.status == 401
        async with http.get(f"{sf.url}/inputs/{'0' * 64}.png") as r:
            assert r.status == 404
        async with http.get(f"{sf.url}/inputs/..%2F..%2Fsegflow.db") as r:
            assert r.status == 404
