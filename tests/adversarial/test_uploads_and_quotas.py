"""Bounded uploads and tenants (issue 13, findings 3 and 7): uploads are streamed to storage, only
the decoded image is kept and it is served inert; per-tenant quotas answer 429 with Retry-After
and hold across replicas (two segflow instances on one database).
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from service.inputs import MAX_INPUT_BYTES
from tests.fixtures.api import IMAGE, Api, png, succeeded
from tests.fixtures.sandbox import image_bytes, wait_until
from tests.fixtures.segflow import TENANT_KEYS, Starter

AUTH = {"authorization": f"Bearer {TENANT_KEYS['acme']}"}


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    app = await segflow("http://127.0.0.1:9", roles=(), allow_private_image_urls=False)
    async with aiohttp.ClientSession() as http:
        yield Api(app, http)


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["png", "jpeg"])
@pytest.mark.parametrize("tail", [b"<html><script>alert(1)</script></html>", b"\0" * 500_000])
async def test_trailing_data_is_not_stored_and_inputs_are_served_inert(api: Api, kind: str, tail: bytes) -> None:
    image = image_bytes(40, 30) if kind == "png" else jpeg(40, 30)
    up = await api.call("POST", "/v1/inputs", data=image + tail, headers={"content-type": f"image/{kind}"})
    assert up.status == 201, up.raw
    assert up.body["bytes"] < len(image) + 64
    async with api.http.get(up.body["url"]) as resp:
        served = await resp.read()
        headers = resp.headers
    assert tail not in served and b"<html" not in served
    assert Image.open(io.BytesIO(served)).size == (40, 30)
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == "sandbox"
    assert headers["content-disposition"].startswith("attachment")


async def test_masks_are_served_inert(api: Api) -> None:
    job_id = (await api.submit())["jobs"][0]["job_id"]
    await succeeded(api.services, job_id, png(4, 4))
    async with api.http.get(f"{api.app.url}/v1/jobs/{job_id}/mask", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-security-policy"] == "sandbox"
        assert resp.headers["content-disposition"].startswith("attachment")


async def test_an_upload_is_streamed_to_disk_while_it_arrives(api: Api) -> None:
    """Half an upload sent, the rest held back: its bytes are already in a temporary file, not
    in the server's memory; once it ends, only the stored image remains."""
    out = io.BytesIO()
    Image.frombytes("RGB", (1200, 900), os.urandom(1200 * 900 * 3)).save(out, format="PNG")  # ~3 MB
    image = out.getvalue()
    half = len(image) // 2
    release = asyncio.Event()
    folder = Path(api.services.settings.artifact_dir) / "inputs"

    async def body() -> AsyncIterator[bytes]:
        yield image[:half]
        await release.wait()
        yield image[half:]

    def spooled() -> int:
        return sum(p.stat().st_size for p in folder.glob(".upload-*")) if folder.is_dir() else 0

    upload = asyncio.create_task(api.call("POST", "/v1/inputs", data=body(), headers={"content-type": "image/png"}))
    await wait_until(lambda: spooled() >= half, timeout_s=10, what="half the upload on disk")
    release.set()
    answer = await upload
    assert answer.status == 201, answer.raw
    assert spooled() == 0 and not list(folder.glob(".clean-*"))  # temporary files are gone


async def test_an_oversized_upload_is_cut_off_and_leaves_nothing(api: Api) -> None:
    async def body() -> AsyncIterator[bytes]:
        chunk = b"\x89PNG" + b"\0" * 1_048_572
        for _ in range(MAX_INPUT_BYTES // len(chunk) + 2):
            yield chunk

    answer = await api.call("POST", "/v1/inputs", data=body(), headers={"content-type": "image/png"})
    assert answer.status == 413
    folder = Path(api.services.settings.artifact_dir) / "inputs"
    assert not folder.is_dir() or not list(folder.iterdir())


async def test_the_daily_upload_quota_answers_429_with_retry_after(segflow: Starter) -> None:
    image = image_bytes(40, 30)
    app = await segflow("http://127.0.0.1:9", roles=(), quota_upload_bytes_per_day=len(image) * 2 + 10)
    async with aiohttp.ClientSession() as http:
        api = Api(app, http)
        for n in range(2):
            up = await api.call("POST", "/v1/inputs", data=image_bytes(40, 30 + n), headers=AUTH)
            assert up.status == 201, up.raw
        over = await api.call("POST", "/v1/inputs", data=image_bytes(41, 30), headers=AUTH)
        assert over.status == 429 and over.error == "quota_exceeded", over.raw
        assert 1 <= int(over.headers["retry-after"]) <= 86_400
        assert over.body["detail"] == [{"quota": "upload_bytes_per_day", "limit": len(image) * 2 + 10}]
        other = await api.call("POST", "/v1/inputs", tenant="globex", data=image, headers={})
        assert other.status == 201  # another tenant's quota is its own


async def test_batch_quotas_hold_across_two_replicas(segflow: Starter) -> None:
    """Two segflow instances on one database share each tenant's limits."""
    limits = {"quota_batches_per_minute": 3, "quota_queued_jobs": 5, "allow_private_image_urls": False}
    a = await segflow("http://127.0.0.1:9", roles=(), **limits)
    b = await segflow("http://127.0.0.1:9", roles=(), **limits)
    item = {"image": IMAGE, "prompt": "car"}
    async with aiohttp.ClientSession() as http:
        one, two = Api(a, http), Api(b, http)
        assert (await one.call("POST", "/v1/batches", json={"items": [item] * 3})).status == 202
        queued = await two.call("POST", "/v1/batches", json={"items": [item] * 3})  # 6 > 5 unfinished
        assert queued.status == 429 and queued.body["detail"][0]["quota"] == "queued_jobs", queued.raw
        assert int(queued.headers["retry-after"]) >= 1
        assert (await two.call("POST", "/v1/batches", json={"items": [item] * 2})).status == 202
        # Three batch requests so far this minute, across both replicas: the fourth is refused.
        rate = await one.call("POST", "/v1/batches", json={"items": [item]})
        if rate.status != 429:  # the minute turned over between requests: one more fills the new one
            rate = await two.call("POST", "/v1/batches", json={"items": [item]})
        assert rate.status == 429, rate.raw
        assert rate.body["detail"][0]["quota"] in ("batches_per_minute", "queued_jobs")
        assert 1 <= int(rate.headers["retry-after"]) <= 60
        assert await one.job_count() == 5
        assert (await one.call("POST", "/v1/batches", tenant="globex", json={"items": [item]})).status == 202
