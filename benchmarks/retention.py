"""Webhook ingest while the pruner deletes expired jobs, against ingest on the same database
without it: the pruner's small batches must leave the hot path its throughput.

Both variants start from the same database: `expired` final jobs that finished 100 days ago (each
with its upstream task, five event-log rows, an artifact row and an outbox event), plus the
submitted jobs the webhooks complete. With the pruner, `segflow serve` runs the `pruner` role in
the same process (as it would in production: SQLite allows one process), which starts deleting at
start-up and is still deleting when the measurement ends (the row reports how many it deleted).
The ingest machinery (servers, load generators, the durability check) is benchmarks/ingest.py's.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import ingest

DAY = 86_400.0
CHUNK = 20_000


def _rows(count: int, start: int, batch: str, now: float) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {"jobs": [], "tasks": [], "events": [], "artifacts": [], "outbox": []}
    for i in range(start, start + count):
        finished = now - 100 * DAY - i * 0.01  # a job finished every 10 ms, long ago
        job, task = str(uuid.uuid4()), str(uuid.uuid4())
        out["jobs"].append((job, batch, "bench", i, "succeeded", task, finished, finished, finished))
        out["tasks"].append((task, job, 1, "created", "completed", finished, finished))
        for n, (event, a, b) in enumerate(
            [
                ("accepted", "", "queued"),
                ("claim", "queued", "submitting"),
                ("created", "submitting", "submitted"),
                ("completed", "submitted", "fetching"),
                ("stored", "fetching", "succeeded"),
            ]
        ):
            out["events"].append((job, finished + n, event, a, b, "bench"))
        out["artifacts"].append((job, 0, "0" * 64, 1000, 640, 480, f"bench/{job}/0.png", "https://x/a.png", finished))
        out["outbox"].append((f"evt_{job}", "bench", "job.succeeded", batch, job, "{}", finished))
    return out


_SQL = {
    "jobs": (
        "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, state, "
        "attempt, task_id, created_at, updated_at, finished_at) VALUES "
        "({0}, {1}, {2}, {3}, 'https://i.example/a.png', 'car', '', 0, {4}, 1, {5}, {6}, {7}, {8})"
    ),
    "tasks": "INSERT INTO tasks VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6})",
    "events": (
        "INSERT INTO events (job_id, at, event, from_state, to_state, source) VALUES ({0}, {1}, {2}, {3}, {4}, {5})"
    ),
    "artifacts": (
        "INSERT INTO artifacts (job_id, idx, sha256, bytes, width, height, path, source_url, content_type, "
        "created_at) VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, 'image/png', {8})"
    ),
    "outbox": "INSERT INTO outbox (id, tenant, type, batch_id, job_id, payload, created_at) "
    "VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6})",
}


async def seed_expired(database_url: str, count: int) -> None:
    """`count` final jobs that finished 100 days ago, with every row a real job leaves behind."""
    from service.store import open_store_for

    store = open_store_for(database_url)
    await store.open()  # migrations
    await store.close()
    now = time.time()
    batch = str(uuid.uuid4())
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(
                "INSERT INTO batches VALUES (?, 'bench', NULL, NULL, 'h', ?, ?)", (batch, count, now - 100 * DAY)
            )
            for start in range(0, count, CHUNK):
                for table, rows in _rows(min(CHUNK, count - start), start, batch, now).items():
                    n = len(rows[0])
                    conn.executemany(_SQL[table].format(*["?"] * n), rows)
        conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO batches VALUES ($1, 'bench', NULL, NULL, 'h', $2, $3)", batch, count, now - 100 * DAY
        )
        for start in range(0, count, CHUNK):
            async with conn.transaction():
                for table, rows in _rows(min(CHUNK, count - start), start, batch, now).items():
                    n = len(rows[0])
                    await conn.executemany(_SQL[table].format(*[f"${i + 1}" for i in range(n)]), rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def left_over(database_url: str) -> tuple[int, int]:
    """(final jobs, masks not yet pruned) still stored: what the pruner has not reached yet (the
    webhooks' own jobs only reach fetching and have no mask)."""
    from service.store import open_store_for

    store = open_store_for(database_url)
    await store.open()
    try:
        counts = await store.job_counts()
        left = await store.retention_counts(masks_cutoff=time.time(), jobs_cutoff=None, outbox_cutoff=None)
    finally:
        await store.close()
    final = sum(n for s, n in counts.items() if s in ("succeeded", "failed", "cancelled", "expired"))
    return int(final), left.masks


def measure_one(database_url: str, work: Path, expired: int, *, pruning: bool, duration_s: float) -> dict[str, Any]:
    """Ingest (req/s) on a database holding `expired` expired jobs, with or without the pruner."""
    asyncio.run(seed_expired(database_url, expired))
    previous = os.environ.get("SEGFLOW_BENCH_ROLES")
    os.environ["SEGFLOW_BENCH_ROLES"] = "pruner" if pruning else ""  # read by ingest.serve
    try:
        result = ingest.measure("segflow", database_url, work, duration_s=duration_s, concurrency=64, generators=2)
    finally:
        if previous is None:
            os.environ.pop("SEGFLOW_BENCH_ROLES", None)
        else:
            os.environ["SEGFLOW_BENCH_ROLES"] = previous
    jobs, masks = asyncio.run(left_over(database_url))
    result["jobs_pruned"], result["masks_pruned"] = expired - jobs, expired - masks
    return result


def rows(runs: int, duration_s: float, full: bool, pg_database: Any, drop: Any) -> list[dict[str, Any]]:
    """One row per database: ingest with the pruner busy, against ingest without it."""
    expired = 1_000_000 if full else 100_000
    make = "make bench-full" if full else "make bench"
    out = []
    for db in ("sqlite", "postgres"):
        figures: dict[bool, list[float]] = {False: [], True: []}
        pruned: list[tuple[int, int]] = []
        skipped = None
        for _ in range(runs):
            for pruning in (False, True):  # interleaved: drift on a shared machine hits both alike
                with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
                    if db == "sqlite":
                        url, name = f"sqlite:///{Path(tmp) / 'bench.db'}", None
                    else:
                        made = asyncio.run(pg_database())
                        if made is None:
                            skipped = "PostgreSQL not reachable"
                            break
                        url, name = made
                    try:
                        result = measure_one(url, Path(tmp), expired, pruning=pruning, duration_s=duration_s)
                    finally:
                        if name is not None:
                            asyncio.run(drop(name))
                if result["errors"] or result.get("moved") != result["sent"]:
                    raise RuntimeError(f"ingest under pruning: {result}")
                figures[pruning].append(result["rps"])
                if pruning:
                    pruned.append((result["jobs_pruned"], result["masks_pruned"]))
            if skipped:
                break
        name = f"webhook ingest while the pruner deletes {expired:,} expired jobs: segflow, {db}"
        if skipped:
            out.append({"benchmark": name, "not_run": skipped})
            continue
        base = statistics.median(figures[False])
        out.append(
            {
                "benchmark": name,
                "unit": "req/s",
                "median": statistics.median(figures[True]),
                "min": min(figures[True]),
                "max": max(figures[True]),
                "baseline": base,
                "ratio": statistics.median(figures[True]) / base,
                "masks_pruned_during_run": statistics.median(m for _, m in pruned),
                "jobs_pruned_during_run": statistics.median(j for j, _ in pruned),
                "command": f"{make}  (benchmarks/retention.py; baseline: ingest on the same database without "
                f"the pruner; {duration_s:.0f} s per run"
                + ("" if full else "; quick profile: 100,000 expired jobs, `make bench-full` uses 1,000,000")
                + ")",
            }
        )
    return out


if __name__ == "__main__":  # this row alone: python -m benchmarks.retention [--full]
    import json
    import sys

    from benchmarks.run import _drop, _pg_database

    full = "--full" in sys.argv
    print(json.dumps(rows(5 if full else 3, 8.0 if full else 4.0, full, _pg_database, _drop), indent=2))
