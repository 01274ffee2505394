"""The artifact store: where masks live once copied from the upstream (a local folder)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path


class LocalArtifactStore:
    """Masks under one folder, written atomically (temporary file, fsync, rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def relative_path(self, tenant: str, job_id: str, idx: int) -> str:
        return f"{tenant}/{job_id}/{idx}.png"

    async def put(self, relative: str, data: bytes) -> Path:
        """Store `data` at `relative` durably; returns the absolute path."""
        return await asyncio.to_thread(self._put, relative, data)

    def _put(self, relative: str, data: bytes) -> Path:
        target = self.resolve(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return target

    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored artifact; refuses paths that leave the root."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError("artifact path outside the artifact folder")
        return path
