"""Fairness across tenants (issue 19): tenant B's 10-job batch behind tenant A's 1,000-job batch,
against the same batch alone. segflow runs with max_in_flight 20, so slots are contended, and the
sandbox takes 0.5 to 1 s a task, as a real segmentation does (with none, the run measures only how
busy one process is with A's other 990 jobs, not how slots are shared)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.flows import start_sandbox, start_segflow, stop

LATENCY = ("0.5", "1.0")
KEYS = {"a": "tenant-a-key-0123456789abcdef", "b": "tenant-b-key-0123456789abcdef"}


async def _batch(http: aiohttp.ClientSession, port: int, tenant: str, items: list[dict[str, Any]]) -> str:
    headers = {"authorization": f"Bearer {KEYS[tenant]}"}
    async with http.post(f"http://127.0.0.1:{port}/v1/batches", json={"items": items}, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["batch_id"])


async def _done(http: aiohttp.ClientSession, port: int, tenant: str, batch_id: str) -> bool:
    headers = {"authorization": f"Bearer {KEYS[tenant]}"}
    async with http.get(f"http://127.0.0.1:{port}/v1/batches/{batch_id}", headers=headers) as resp:
        body = await resp.json()
    return bool(body["done"] == body["total"])


def small_batch_seconds(work: Path, *, behind: int) -> float:
    """Seconds from submitting B's 10 jobs to their end, with A's `behind` jobs queued first."""
    sandbox, url = start_sandbox(work, LATENCY)
    keys = ",".join(f"{t}:{k}" for t, k in KEYS.items())
    segflow, port = start_segflow(work, url, SEGFLOW_API_KEYS=keys, SEGFLOW_MAX_IN_FLIGHT="20")

    async def run() -> float:
        sample = f"{url}/samples/street.jpg"
        async with aiohttp.ClientSession() as http:
            if behind:
                await _batch(http, port, "a", [{"image": sample, "prompt": f"a {i}"} for i in range(behind)])
            started = time.monotonic()
            batch_id = await _batch(http, port, "b", [{"image": sample, "prompt": f"b {i}"} for i in range(10)])
            while not await _done(http, port, "b", batch_id):
                if time.monotonic() - started > 300:
                    raise TimeoutError("small batch did not finish")
                await asyncio.sleep(0.02)
            return time.monotonic() - started

    try:
        return asyncio.run(run())
    finally:
        stop(segflow, sandbox)
