"""The artifact backends, each against the real thing: a local folder and an S3-protocol server on
loopback. Writes are whole or invisible, bounded, hashed; staged writes commit under their name."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.artifacts import (
    STAGING,
    ArtifactBackend,
    ArtifactMissing,
    ArtifactTooLarge,
    ArtifactUnavailable,
    input_key,
    mask_key,
    one_chunk,
    open_backend,
)
from service.artifacts_s3 import SINGLE_PUT_BYTES
from tests.fixtures.s3 import S3Bucket

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactBackend:
    if request.param == "local":
        return open_backend(f"file://{tmp_path / 'artifacts'}", "")
    bucket: S3Bucket = request.getfixturevalue("s3")
    return open_backend(bucket.artifact_url, "", bucket.endpoint)


async def read(backend: ArtifactBackend, key: str) -> bytes:
    opened = await backend.open(key)
    return b"".join([c async for c in opened.chunks])


async def chunks(total: int, size: int = 64 * 1024, fail_after: int | None = None) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("client went away")
        piece = min(size, total - sent)
        yield os.urandom(piece)
        sent += piece


async def test_a_mask_is_written_hashed_and_read_back(backend: ArtifactBackend) -> None:
    data = os.urandom(5000)
    key = mask_key("acme", "job-1", 0)
    stored = await backend.write(key, one_chunk(data), max_bytes=len(data), content_type="image/png")
    assert (stored.key, stored.sha256, stored.size) == (key, hashlib.sha256(data).hexdigest(), len(data))
    assert await read(backend, key) == data
    opened = await backend.open(key)
    assert (opened.size, opened.content_type) == (len(data), "image/png")
    await opened.chunks.aclose()
    assert await backend.exists(key)


async def test_a_large_streamed_write_is_stored_whole(backend: ArtifactBackend) -> None:
    size = SINGLE_PUT_BYTES + 3 * MiB  # past one PUT: a multipart upload on S3
    digest = hashlib.sha256()

    async def recorded() -> AsyncIterator[bytes]:
        async for c in chunks(size):
            digest.update(c)
            yield c

    stored = await backend.write("big/object.bin", recorded(), max_bytes=size, content_type="application/octet-stream")
    assert stored.size == size and stored.sha256 == digest.hexdigest()
    assert hashlib.sha256(await read(backend, "big/object.bin")).hexdigest() == digest.hexdigest()


@pytest.mark.parametrize("size", [200_000, SINGLE_PUT_BYTES + 2 * MiB])
async def test_an_upload_cut_halfway_leaves_nothing_visible(backend: ArtifactBackend, size: int) -> None:
    with pytest.raises(ConnectionResetError):
        await backend.write("cut/object.bin", chunks(size, fail_after=size // 2), max_bytes=size, content_type="x/y")
    assert not await backend.exists("cut/object.bin")
    with pytest.raises(ArtifactMissing):
        await backend.open("cut/object.bin")
    assert await backend.list_older("", time.time() + 60) == []


async def test_a_write_past_its_bound_is_refused_and_leaves_nothing(backend: ArtifactBackend) -> None:
    with pytest.raises(ArtifactTooLarge):
        await backend.write("large.bin", chunks(300_000), max_bytes=100_000, content_type="x/y")
    assert not await backend.exists("large.bin")
    assert await backend.list_older("", time.time() + 60) == []


async def test_a_staged_write_is_invisible_until_committed_under_its_content_name(backend: ArtifactBackend) -> None:
    data = os.urandom(70_000)
    staged = await backend.stage(one_chunk(data), max_bytes=len(data))
    assert staged.sha256 == hashlib.sha256(data).hexdigest() and staged.head == data[:64]
    key = input_key(f"{staged.sha256}.png")
    assert not await backend.exists(key)
    stored = await backend.commit(staged, key, content_type="image/png")
    assert stored.sha256 == staged.sha256 and await read(backend, key) == data
    assert not await backend.exists(staged.temp_key)
    discarded = await backend.stage(one_chunk(b"not an image"), max_bytes=100)
    await backend.discard(discarded)
    assert not await backend.exists(discarded.temp_key)
    assert await backend.list_older(STAGING, time.time() + 60) == []


async def test_delete_is_idempotent_and_listing_sees_only_older_objects(backend: ArtifactBackend) -> None:
    for name in ("a.png", "b.png"):
        await backend.write(input_key(name), one_chunk(b"x" * 10), max_bytes=10, content_type="image/png")
    assert sorted(o.key for o in await backend.list_older("inputs", time.time() + 60)) == [
        "inputs/a.png",
        "inputs/b.png",
    ]
    assert await backend.list_older("inputs", time.time() - 3600) == []
    await backend.delete(["inputs/a.png", "inputs/never-written.png"])
    await backend.delete(["inputs/a.png"])
    assert [o.key for o in await backend.list_older("inputs", time.time() + 60)] == ["inputs/b.png"]


@pytest.mark.parametrize("key", ["../escape.png", "/etc/passwd", "a/../../b", "a//./b", ""])
async def test_keys_that_would_leave_the_root_are_refused(backend: ArtifactBackend, key: str) -> None:
    with pytest.raises(ValueError):
        await backend.write(key, one_chunk(b"x"), max_bytes=1, content_type="x/y")


async def test_an_unreachable_object_store_is_reported_as_unavailable(s3: S3Bucket) -> None:
    closed = open_backend(s3.artifact_url, "", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ArtifactUnavailable):
        await closed.write("k.png", one_chunk(b"x"), max_bytes=1, content_type="image/png")
