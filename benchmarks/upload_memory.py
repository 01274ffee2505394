"""Server memory under concurrent uploads: `segflow serve` (its own process, SQLite) receives N
concurrent uploads of a valid 20 MB PNG to /v1/inputs; the server's resident set is read from
/proc before and after (VmRSS, and the peak VmHWM).

Uses only `segflow serve` and the public API, so the same command measures any checkout:
`python -m benchmarks.upload_memory [--uploads 16]` (PYTHONPATH picks the tree under test).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "bench-tenant-key-0123456789abcdef"


def big_png(target_bytes: int) -> bytes:
    """A valid PNG of about `target_bytes` (noise does not compress), each side under 3072 px."""
    from PIL import Image

    side = int((target_bytes / 3) ** 0.5)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG", compress_level=0)
    return out.getvalue()


def _memory_mb(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Vm")
    )
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


async def _upload_all(url: str, body: bytes, n: int) -> list[int]:
    import aiohttp

    async def one(http: aiohttp.ClientSession) -> int:
        headers = {"authorization": f"Bearer {KEY}", "content-type": "image/png"}
        async with http.post(f"{url}/v1/inputs", data=body, headers=headers) as resp:
            await resp.read()
            return resp.status

    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(one(http) for _ in range(n))))


def measure(uploads: int, size: int) -> dict[str, object]:
    from benchmarks.ingest import _wait_port
    from benchmarks.machine import free_port

    body = big_png(size)
    with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "SEGFLOW_PORT": str(port),
            "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "SEGFLOW_DATABASE_URL": f"sqlite:///{tmp}/segflow.db",
            "SEGFLOW_ARTIFACT_DIR": f"{tmp}/artifacts",
            "SEGFLOW_UPSTREAM_URL": "http://127.0.0.1:9",
            "SEGFLOW_UPSTREAM_API_KEY": "bench-upstream-key-0123456789",
            "SEGFLOW_WEBHOOK_KEYS": "bench-webhook-master-key-0123456789",
            "SEGFLOW_API_KEYS": f"bench:{KEY}",
            "SEGFLOW_LOG_LEVEL": "error",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--no-workers"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            _wait_port(port)
            before = _memory_mb(server.pid)
            started = time.perf_counter()
            statuses = asyncio.run(_upload_all(f"http://127.0.0.1:{port}", body, uploads))
            took = time.perf_counter() - started
            after = _memory_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return {
        "uploads": uploads,
        "upload_mb": round(len(body) / 1e6, 1),
        "statuses": {s: statuses.count(s) for s in set(statuses)},
        "rss_mb_before": round(before["VmRSS"]),
        "rss_mb_after": round(after["VmRSS"]),
        "peak_rss_mb": round(after["VmHWM"]),
        "seconds": round(took, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uploads", type=int, default=16)
    parser.add_argument("--bytes", type=int, default=20_000_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.uploads, args.bytes)))


if __name__ == "__main__":
    main()
