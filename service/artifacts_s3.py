"""The S3-compatible artifact backend (AWS S3, MinIO, R2, GCS interop…) through obstore.

Credentials and region come from the standard AWS_* variables (obstore reads them, and the
instance/container credential chain when they are absent), never from segflow's TOML file.
SEGFLOW_S3_ENDPOINT_URL names a non-AWS endpoint; it switches to path-style addressing.

Atomicity comes from S3 itself: an object appears only when its PUT (or its multipart upload's
completion) succeeds. A stream that fails or passes its size bound aborts the multipart upload, so
a cut upload leaves nothing visible. After each write the stored object is checked against what was
sent (the MD5 ETag of a single PUT, the size of a multipart one) and deleted if it differs.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import obstore
import obstore.exceptions
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

from service.artifacts import (
    STAGING,
    ArtifactCorrupt,
    ArtifactMissing,
    ArtifactTooLarge,
    ArtifactUnavailable,
    Hashing,
    Listed,
    Opened,
    Staged,
    Stored,
    check_key,
    content_type_of,
)

SINGLE_PUT_BYTES = 5 * 1024 * 1024
"""Writes up to this size go in one PUT (every mask); larger ones stream as a multipart upload."""


@contextlib.contextmanager
def _translated(source: Hashing | None = None, *, writing: bool = False) -> Iterator[None]:
    """obstore's errors as the backend interface's: missing, or unavailable (retry later). An
    error of the stream being uploaded is the caller's own and goes through unchanged; "not found"
    while writing means the bucket is missing, which is the storage's fault, not the object's."""
    try:
        yield
    except (ArtifactTooLarge, ArtifactCorrupt, ArtifactMissing):
        raise
    except Exception as exc:
        if source is not None and exc is source.failure:
            raise
        if isinstance(exc, FileNotFoundError) and not writing:
            raise ArtifactMissing(str(exc).split(":", 1)[0]) from None
        if isinstance(exc, obstore.exceptions.BaseError | OSError):  # FileNotFoundError is an OSError
            # The first line names the operation and the object; the rest is the server's debug dump.
            raise ArtifactUnavailable(str(exc).splitlines()[0][:300]) from None
        raise


class S3ArtifactStore:
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str = "") -> None:
        if not bucket:
            raise ValueError("s3:// artifact URL needs a bucket: s3://BUCKET[/PREFIX]")
        config: S3Config = {}
        client: ClientConfig = {"timeout": timedelta(seconds=60), "connect_timeout": timedelta(seconds=5)}
        if endpoint_url:
            config["endpoint"] = endpoint_url
            config["virtual_hosted_style_request"] = False  # MinIO, moto and most others: path style
            client["allow_http"] = endpoint_url.startswith("http://")
        self._store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,
            client_options=client,
            retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=30)},
        )
        where = f"s3://{bucket}/{prefix}".rstrip("/")
        self.description = f"{where} at {endpoint_url}" if endpoint_url else where

    async def write(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, content_type: str) -> Stored:
        hashing = Hashing(chunks, max_bytes)
        with _translated(hashing, writing=True):
            await self._put(check_key(key), hashing, content_type)
        return Stored(key, hashing.sha256.hexdigest(), hashing.size)

    async def stage(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> Staged:
        temp_key = f"{STAGING}/{secrets.token_hex(16)}"
        hashing = Hashing(chunks, max_bytes)
        with _translated(hashing, writing=True):
            await self._put(temp_key, hashing, "application/octet-stream")
        return Staged(temp_key, hashing.sha256.hexdigest(), hashing.size, hashing.head)

    async def commit(self, staged: Staged, key: str, *, content_type: str) -> Stored:
        with _translated(writing=True):
            # A server-side copy is atomic like a PUT; the staged object goes afterwards.
            await obstore.copy_async(self._store, staged.temp_key, check_key(key))
            await obstore.delete_async(self._store, staged.temp_key)
        return Stored(key, staged.sha256, staged.size)

    async def discard(self, staged: Staged) -> None:
        with _translated():
            await obstore.delete_async(self._store, staged.temp_key)

    async def open(self, key: str) -> Opened:
        with _translated():
            got = await obstore.get_async(self._store, check_key(key))
        ctype = str(got.attributes.get("Content-Type") or content_type_of(key))
        return Opened(int(got.meta["size"]), ctype, _bytes_of(got.stream(min_chunk_size=256 * 1024)))

    async def exists(self, key: str) -> bool:
        try:
            with _translated():
                await obstore.head_async(self._store, check_key(key))
        except ArtifactMissing:
            return False
        return True

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            with _translated():
                await obstore.delete_async(self._store, [check_key(k) for k in keys])

    async def list_older(self, prefix: str, cutoff: float) -> list[Listed]:
        out: list[Listed] = []
        with _translated():
            async for page in obstore.list(self._store, prefix.strip("/") or None, chunk_size=1000):
                for meta in page:
                    modified = meta["last_modified"].timestamp()
                    if modified < cutoff:
                        out.append(Listed(meta["path"], int(meta["size"]), modified))
        return out

    async def close(self) -> None:
        return None

    async def _put(self, key: str, hashing: Hashing, content_type: str) -> None:
        attributes: dict[str, str] = {"Content-Type": content_type}
        # Read ahead up to SINGLE_PUT_BYTES: a stream that ends by then goes in one PUT.
        stream = aiter(hashing)
        first: list[bytes] = []
        buffered = 0
        async for chunk in stream:
            first.append(chunk)
            buffered += len(chunk)
            if buffered > SINGLE_PUT_BYTES:
                break
        else:
            data = b"".join(first)
            result = await obstore.put_async(self._store, key, data, attributes=attributes, use_multipart=False)
            etag = (result.get("e_tag") or "").strip('"')
            if etag and "-" not in etag and etag != hashing.md5.hexdigest():
                await obstore.delete_async(self._store, key)
                raise ArtifactCorrupt(f"stored object's checksum differs from what was sent ({key})")
            return

        async def rest() -> AsyncIterator[bytes]:
            for chunk in first:
                yield chunk
            async for chunk in stream:
                yield chunk

        # A stream that fails (client gone, size bound passed) aborts the multipart upload.
        await obstore.put_async(self._store, key, rest(), attributes=attributes, use_multipart=True)
        meta = await obstore.head_async(self._store, key)
        if int(meta["size"]) != hashing.size:
            await obstore.delete_async(self._store, key)
            raise ArtifactCorrupt(f"stored object's size differs from what was sent ({key})")


async def _bytes_of(stream: AsyncIterable[object]) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield bytes(chunk)  # type: ignore[call-overload]
