"""Masks served under /temp until their retention ends, and the demo samples."""

from __future__ import annotations

import asyncio
import hashlib
import io

import aiohttp
from PIL import Image

from service.sandbox.masks import SYNTHETIC_NOTE
from tests.fixtures.sandbox import ImageHost, RunningSandbox, StartSandbox, image_bytes


async def mask_of(http: aiohttp.ClientSession, sb: RunningSandbox, image: str, prompt: str) -> tuple[str, bytes]:
    """Create a task, wait for it, and download its mask; returns (output URL, PNG bytes)."""
    async with http.post(f"{sb.url}/api/v1/task", json=sb.body(image, prompt), headers=sb.headers) as response:
        task_id = (await response.json())["data"]["task_id"]
    assert await sb.wait_final(task_id) == "completed"
    url = sb.engine.tasks[task_id].output_url
    assert url is not None
    async with http.get(url) as response:
        assert response.status == 200 and response.content_type == "image/png"
        return url, await response.read()


async def test_mask_is_a_binary_png_of_the_input_size(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, image_host: ImageHost
) -> None:
    sb = await sandbox()
    image = image_host.add("photo.jpg", image_bytes(300, 200, "JPEG"), "image/jpeg")
    _, png = await mask_of(sandbox_http, sb, image, "clothes,shoes")

    with Image.open(io.BytesIO(png)) as mask:
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == (300, 200)
        assert [value for value, count in enumerate(mask.histogram()) if count] == [0, 255]
        assert mask.info["Comment"] == SYNTHETIC_NOTE
    (row,) = sb.engine.tasks_json()
    assert row["mask_sha256"] == hashlib.sha256(png).hexdigest()


async def test_mask_depends_only_on_the_image_and_the_prompts(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    _, first = await mask_of(sandbox_http, sb, sb.sample_url("portrait.jpg"), "shirt,shoes")
    _, again = await mask_of(sandbox_http, sb, sb.sample_url("portrait.jpg"), "shirt,shoes")
    _, other_prompt = await mask_of(sandbox_http, sb, sb.sample_url("portrait.jpg"), "hat")
    _, other_image = await mask_of(sandbox_http, sb, sb.sample_url("street.jpg"), "shirt,shoes")

    assert first == again
    assert len({first, other_prompt, other_image}) == 3


async def test_output_is_deleted_after_retention(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(retention_s=1.0)
    url, _ = await mask_of(sandbox_http, sb, sb.sample_url(), "car")

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while True:
        async with sandbox_http.get(url) as response:
            if response.status == 404:
                break
        assert loop.time() < deadline, "the output outlived its retention"
        await asyncio.sleep(0.02)
    assert sb.engine.stats_json()["outputs"]["expired"] == 1


async def test_samples_are_listed_and_served(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox()
    async with sandbox_http.get(f"{sb.url}/samples") as response:
        samples = (await response.json())["samples"]

    assert len(samples) >= 3
    for sample in samples:
        async with sandbox_http.get(sample["url"]) as response:
            assert response.content_type == sample["content_type"]
            with Image.open(io.BytesIO(await response.read())) as picture:
                assert picture.size == (sample["width"], sample["height"])


async def test_unknown_files_are_404(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox()
    for path in ("/samples/nope.jpg", "/temp/00000000-0000-0000-0000-000000000000.png", "/temp/..%2Fx"):
        async with sandbox_http.get(f"{sb.url}{path}") as response:
            assert response.status == 404
