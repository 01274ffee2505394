"""Store-only throughput: completion-webhook transitions per second into the store, 64 callers at
a time, no HTTP. It uses whatever `service` package comes first on the path, so `make bench` runs
it on this tree and on the tree before the one-store rewrite (`BASELINE_COMMIT`) in the same run.

    python benchmarks/transitions.py sqlite:///tmp/x.db 5000   # prints {"per_s": …}
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import time
from pathlib import Path

import orjson

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "upstream" / "webhook-completed.json"


async def measure(database_url: str, n: int, concurrency: int = 64) -> float:
    from benchmarks.ingest import prepare
    from service.completion import SnapshotPolicy, decide_snapshot
    from service.store import open_store_for
    from service.upstream.wire import decode_webhook

    pairs = await prepare(database_url, n)
    template = orjson.loads(EXAMPLE.read_bytes())
    snaps = []
    for _job_id, task_id in pairs:
        body = copy.deepcopy(template)
        body["data"]["task_id"] = task_id
        snaps.append(decode_webhook(orjson.dumps(body)).task)
    policy = SnapshotPolicy(3, 30.0, 1.0, 60.0)
    store = open_store_for(database_url)
    await store.open()
    slots = asyncio.Semaphore(concurrency)

    async def one(job_id: str, snap: object) -> None:
        async with slots:
            decide = decide_snapshot(snap, attempt=1, source="webhook", policy=policy, now=time.time())  # type: ignore[arg-type]
            if not (await store.transition(job_id, decide, task_id=snap.task_id)).applied:  # type: ignore[attr-defined]
                raise RuntimeError(f"job {job_id} did not move")

    profile = os.environ.get("SEGFLOW_BENCH_PROFILE")  # a file for pyinstrument's text report
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(j, s) for (j, _), s in zip(pairs, snaps, strict=True)))
        return n / (time.perf_counter() - started)
    finally:
        if profiler is not None:
            profiler.stop()
            _write(Path(str(profile)), profiler.output_text(unicode=False, show_all=False))
        await store.close()


def _write(path: Path, text: str) -> None:
    path.write_text(text)


if __name__ == "__main__":
    print(json.dumps({"per_s": asyncio.run(measure(sys.argv[1], int(sys.argv[2])))}))
