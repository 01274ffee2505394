"""Store-only throughput: completion-webhook transitions per second into the store, 64 callers at
a time, no HTTP. It uses whatever `service` package comes first on the path, so `make bench` runs
it on this tree and on the tree before the one-store rewrite (`BASELINE_COMMIT`) in the same run.
With `floor`, the same callers (64 at a time) each queue one `UPDATE` of their job's row to the
minimal group commit of `benchmarks/floor.py` instead: no decision, no task or event row, the
store-only rate no store keeping segflow's records can pass here.

With `sql`, the same callers' groups run just segflow's own statements for each transition (read
the jobs and their tasks, write each job whole, upsert its task, insert its event row), through
segflow's driver, with parameters made up front and no decision: what the records segflow keeps
cost the database, whatever Python decides them.

    python benchmarks/transitions.py sqlite:///tmp/x.db 5000 [floor|sql]   # prints {"per_s": …}
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import sys
import time
from functools import partial
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


async def measure_floor(database_url: str, n: int, concurrency: int = 64) -> float:
    from benchmarks.floor import UPDATE, GroupCommit
    from benchmarks.ingest import _count_fetching, prepare

    pairs = await prepare(database_url, n)
    writes = GroupCommit(database_url)
    await writes.start()
    slots = asyncio.Semaphore(concurrency)

    async def one(job_id: str) -> None:
        async with slots:
            await writes.write(UPDATE, time.time(), job_id)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(j) for j, _ in pairs))
        rate = n / (time.perf_counter() - started)
    finally:
        await writes.stop()
    if (moved := await _count_fetching(database_url)) != n:
        raise RuntimeError(f"{n} updates committed but {moved} jobs moved")
    return rate


async def measure_sql(database_url: str, n: int, concurrency: int = 64) -> float:
    from benchmarks.ingest import _count_fetching, prepare
    from service.store import open_store_for
    from service.store.driver import Conn

    pairs = await prepare(database_url, n)
    store = open_store_for(database_url)
    await store.open()
    pending: list[tuple[str, str, asyncio.Future[None]]] = []
    wake = asyncio.Event()

    async def statements(group: list[tuple[str, str, asyncio.Future[None]]], c: Conn) -> None:
        now = time.time()
        jobs = await c.fetch("lock_jobs", sorted(j for j, _, _ in group))
        tasks = await c.fetch("select_tasks", sorted(t for _, t, _ in group))
        if len(jobs) != len(group) or len(tasks) != len(group):
            raise RuntimeError("jobs or tasks missing")
        urls = orjson.dumps(["https://img.example/m.png"]).decode()
        changed = (None, now + 60, 0.0, None, 0, 0, now, None, now, urls, None, None, None, None, None, now)
        await c.executemany(
            "update_job", [("fetching", now, 1, t, *changed, None, None, None, j, "submitted") for j, t, _ in group]
        )
        await c.executemany("upsert_task", [(t, j, 1, "created", "completed", now, now, 1.0, 1.0) for j, t, _ in group])
        await c.executemany(
            "insert_event", [(j, now, "webhook", "submitted", "fetching", "webhook", None) for j, _, _ in group]
        )

    async def writer() -> None:
        while True:
            await wake.wait()
            wake.clear()
            while pending:
                group = pending[:256]
                del pending[:256]
                try:
                    await store.driver.write(partial(statements, group))
                except Exception as exc:  # every caller fails: the run then fails
                    for _, _, fut in group:
                        fut.set_exception(exc)
                    continue
                for _, _, fut in group:
                    fut.set_result(None)

    task = asyncio.create_task(writer())
    slots = asyncio.Semaphore(concurrency)

    async def one(job_id: str, task_id: str) -> None:
        async with slots:
            fut = asyncio.get_running_loop().create_future()
            pending.append((job_id, task_id, fut))
            wake.set()
            await fut

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(j, t) for j, t in pairs))
        rate = n / (time.perf_counter() - started)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
    if (moved := await _count_fetching(database_url)) != n:
        raise RuntimeError(f"{n} transitions committed but {moved} jobs moved")
    return rate


if __name__ == "__main__":
    run = {"floor": measure_floor, "sql": measure_sql}.get(sys.argv[3] if len(sys.argv) > 3 else "", measure)
    print(json.dumps({"per_s": asyncio.run(run(sys.argv[1], int(sys.argv[2])))}))
