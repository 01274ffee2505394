"""The local-folder artifact backend: files under one root, written atomically (temporary file in
the target's folder, fsync, rename, fsync of the folder), so a crash leaves the old state or the
new one, never half a file under its final name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path
from typing import BinaryIO

from service.artifacts import (
    STAGING,
    ArtifactMissing,
    Hashing,
    Listed,
    Opened,
    Staged,
    Stored,
    check_key,
    content_type_of,
)

READ_CHUNK = 256 * 1024
WRITE_BUFFER = 1024 * 1024


class LocalArtifactStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.description = f"file://{self.root}"

    def resolve(self, key: str) -> Path:
        """The absolute path of a key; refuses keys that would leave the root."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("artifact path outside the artifact folder")
        return path

    async def write(self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int, content_type: str) -> Stored:
        check_key(key)  # a malformed key is refused before anything is read; the path is resolved off the loop
        hashing = Hashing(chunks, max_bytes)
        await self._write_file(key, hashing)
        return Stored(key, hashing.sha256.hexdigest(), hashing.size)

    async def stage(self, chunks: AsyncIterable[bytes], *, max_bytes: int) -> Staged:
        temp_key = f"{STAGING}/{secrets.token_hex(16)}"
        hashing = Hashing(chunks, max_bytes)
        await self._write_file(temp_key, hashing)
        return Staged(temp_key, hashing.sha256.hexdigest(), hashing.size, hashing.head)

    async def commit(self, staged: Staged, key: str, *, content_type: str) -> Stored:
        source, target = self.resolve(staged.temp_key), self.resolve(key)
        await asyncio.to_thread(_rename_durably, source, target)
        return Stored(key, staged.sha256, staged.size)

    async def discard(self, staged: Staged) -> None:
        await asyncio.to_thread(self.resolve(staged.temp_key).unlink, True)

    async def open(self, key: str) -> Opened:
        path = self.resolve(key)
        try:
            fh = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactMissing(key) from None
        size = os.fstat(fh.fileno()).st_size
        return Opened(size, content_type_of(key), _read_chunks(fh))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.resolve(key).is_file)

    async def delete(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self._delete, keys)

    def _delete(self, keys: Sequence[str]) -> None:
        # Resolving a path is filesystem calls too: all of it off the event loop.
        _unlink_all([self.resolve(k) for k in keys], self.root)

    async def list_older(self, prefix: str, cutoff: float) -> list[Listed]:
        return await asyncio.to_thread(self._list_older, prefix.strip("/"), cutoff)

    def _list_older(self, prefix: str, cutoff: float) -> list[Listed]:
        base = self.resolve(prefix) if prefix else self.root
        out: list[Listed] = []
        if not base.is_dir():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime < cutoff:
                    out.append(Listed(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime))
        return out

    async def close(self) -> None:
        return None

    async def _write_file(self, key: str, chunks: AsyncIterable[bytes]) -> None:
        """Write atomically: chunks are gathered up to WRITE_BUFFER bytes per trip to a thread, so a
        mask (one small chunk) is opened, written, synced and renamed in one trip, not one per step."""
        part = _Part(self, key)
        try:
            pending: list[bytes] = []
            size = 0
            async for chunk in chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= WRITE_BUFFER:
                    await asyncio.to_thread(part.write, pending)
                    pending, size = [], 0
            await asyncio.to_thread(part.finish, pending)
        except BaseException:
            part.discard()  # a partial write never gets its final name
            raise


class _Part:
    """The temporary file a write goes to, in its target's folder, until it is renamed into place."""

    def __init__(self, store: LocalArtifactStore, key: str) -> None:
        self._store, self._key = store, key
        self._fh: BinaryIO | None = None
        self._tmp: str | None = None
        self._target: Path | None = None

    def write(self, chunks: list[bytes]) -> None:
        if self._fh is None:
            self._target = self._store.resolve(self._key)
            self._target.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=self._target.parent, prefix=".part-")
            self._fh = os.fdopen(fd, "wb")
        self._fh.writelines(chunks)

    def finish(self, chunks: list[bytes]) -> None:
        self.write(chunks)
        assert self._fh is not None and self._tmp is not None and self._target is not None
        with self._fh:
            _flush(self._fh)
        _rename_durably(Path(self._tmp), self._target, make_folder=False)  # it holds the temporary file

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


def _flush(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _rename_durably(source: Path, target: Path, *, make_folder: bool = True) -> None:
    if make_folder:
        target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_all(paths: list[Path], root: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        if path.parent != root:
            with contextlib.suppress(OSError):  # the job's folder, once its last mask is gone
                path.parent.rmdir()


async def _read_chunks(fh: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
            yield chunk
    finally:
        fh.close()
