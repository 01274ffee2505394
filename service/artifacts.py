"""Artifact storage: where masks and uploaded inputs live, behind one small interface.

Two backends: a local folder (the default, `artifacts_local.py`) and S3-compatible object storage
(`artifacts_s3.py`), chosen by SEGFLOW_ARTIFACT_URL (`file:///path` or `s3://bucket/prefix`).

Every write is streamed (an async iterator of chunks), bounded in size, hashed on the way, and
atomic: a reader sees the whole object or nothing, never a partial upload. A write whose name is
known up front goes straight to its key (`write`); one named after its content (an uploaded input,
`inputs/<sha256>.<ext>`) is staged under a temporary key, checked, then committed (`stage`,
`commit`, `discard`). Keys are relative, `/`-separated, and never leave the backend's root.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

STAGING = ".staging"
"""Prefix of staged (uncommitted) writes; the pruner removes those left behind by a crash."""

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")


class ArtifactMissing(Exception):
    """No object at that key (never written, or pruned)."""


class ArtifactUnavailable(Exception):
    """The storage cannot be reached or refused the request (retry later); nothing was stored."""


class ArtifactTooLarge(Exception):
    """A write went past its size bound; nothing was stored."""


class ArtifactCorrupt(Exception):
    """The backend did not store what was sent (size or checksum differs); nothing is visible."""


@dataclass(frozen=True, slots=True)
class Stored:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Staged:
    """A complete, hashed write under a temporary key, not yet visible under its final name."""

    temp_key: str
    sha256: str
    size: int
    head: bytes  # the first bytes, enough to recognise an image format


@dataclass(frozen=True, slots=True)
class Listed:
    key: str
    size: int
    modified: float  # unix seconds


@dataclass(frozen=True, slots=True)
class Opened:
    size: int
    content_type: str
    chunks: AsyncIterator[bytes]


class ArtifactBackend(Protocol):
    """Masks and inputs, wherever they are kept."""

    description: str  # where, for logs and `segflow prune` (never credentials)

    async def write(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, content_type: str) -> Stored: ...
    async def stage(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> Staged: ...
    async def commit(self, staged: Staged, key: str, *, content_type: str) -> Stored: ...
    async def discard(self, staged: Staged) -> None: ...
    async def open(self, key: str) -> Opened:
        """The object's bytes as a stream; raises ArtifactMissing."""
        ...

    async def exists(self, key: str) -> bool: ...
    async def delete(self, keys: Sequence[str]) -> None:
        """Remove objects; keys already gone are fine (the pruner may run twice)."""
        ...

    async def list_older(self, prefix: str, cutoff: float) -> list[Listed]:
        """Objects under `prefix` last written before `cutoff`."""
        ...

    async def close(self) -> None: ...


def check_key(key: str) -> str:
    """`key` if it is a safe relative key: not absolute, no empty, `.` or `..` segment, no control
    character or backslash, at most 1024 bytes (the S3 limit)."""
    segments = key.split("/")
    if not key or len(key.encode()) > 1024 or _UNSAFE.search(key) or any(seg in ("", ".", "..") for seg in segments):
        raise ValueError(f"invalid artifact key {key[:80]!r}")
    return key


def content_type_of(key: str) -> str:
    if key.endswith(".png"):
        return "image/png"
    if key.endswith(".jpg"):
        return "image/jpeg"
    return "application/octet-stream"


def mask_key(tenant: str, job_id: str, idx: int) -> str:
    return f"{tenant}/{job_id}/{idx}.png"


def input_key(name: str) -> str:
    return f"inputs/{name}"


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """`data` as a stream of one chunk (a mask already in memory)."""
    yield data


class Hashing:
    """Wraps a stream: bounds its size and computes sha256 (and md5, for S3 ETags) on the way."""

    HEAD_BYTES = 64

    def __init__(self, chunks: AsyncIterable[bytes], max_bytes: int) -> None:
        self._chunks = chunks
        self._max = max_bytes
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.head = b""
        self.failure: Exception | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                if not chunk:
                    continue
                self.size += len(chunk)
                if self.size > self._max:
                    raise ArtifactTooLarge(f"more than {self._max} bytes")
                if len(self.head) < self.HEAD_BYTES:
                    self.head += chunk[: self.HEAD_BYTES - len(self.head)]
                self.sha256.update(chunk)
                self.md5.update(chunk)
                yield bytes(chunk)
        except Exception as exc:
            self.failure = exc  # the source's own error (a client gone), not the storage's
            raise


def open_backend(artifact_url: str, artifact_dir: str, s3_endpoint_url: str = "") -> ArtifactBackend:
    """The backend SEGFLOW_ARTIFACT_URL names (empty: the local folder SEGFLOW_ARTIFACT_DIR)."""
    if not artifact_url:
        from service.artifacts_local import LocalArtifactStore

        return LocalArtifactStore(artifact_dir)
    parts = urlsplit(artifact_url)
    if parts.scheme == "file":
        from service.artifacts_local import LocalArtifactStore

        return LocalArtifactStore(parts.path)
    if parts.scheme == "s3":
        from service.artifacts_s3 import S3ArtifactStore

        return S3ArtifactStore(parts.netloc, parts.path.strip("/"), endpoint_url=s3_endpoint_url)
    raise ValueError("artifact URL must be file:///PATH or s3://BUCKET[/PREFIX]")
