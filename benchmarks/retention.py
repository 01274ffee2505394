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
import shutil
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
    out: dict[str, list[tuple[Any, ...]]] = {
        "jobs": [],
        "tasks": [],
        "events": [],
        "artifacts": [],
        "pruned_masks": [],
        "outbox": [],
    }
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
        # As in a deployment that has run for months: its mask went at 30 days, the job goes at 90.
        out["pruned_masks"].append((job, 0, finished, finished + 30 * DAY))
        out["outbox"].append((f"evt_{job}", "bench", "job.succeeded", batch, job, "{}", finished))
    return out


_SQL = {
    "jobs": (
        "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, state, "
        "attempt, task_id, created_at, updated_at, finished_at) VALUES "
        "({0}, {1}, {2}, {3}, 'https://i.example/a.png', 'car', '', 0, {4}, 1, {5}, {6}, {7}, {8})"
    ),
    "tasks": "INSERT INTO tasks (task_id, job_id, attempt, origin, status, created_at, updated_at) "
    "VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6})",
    "events": (
        "INSERT INTO events (job_id, at, event, from_state, to_state, source) VALUES ({0}, {1}, {2}, {3}, {4}, {5})"
    ),
    "artifacts": (
        "INSERT INTO artifacts (job_id, idx, sha256, bytes, width, height, path, source_url, content_type, "
        "created_at) VALUES ({0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, 'image/png', {8})"
    ),
    "pruned_masks": "INSERT INTO pruned_masks VALUES ({0}, {1}, {2}, {3})",
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
                "INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at) "
                "VALUES (?, 'bench', NULL, NULL, 'h', ?, ?)",
                (batch, count, now - 100 * DAY),
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
            "INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at) "
            "VALUES ($1, 'bench', NULL, NULL, 'h', $2, $3)",
            batch,
            count,
            now - 100 * DAY,
        )
        for start in range(0, count, CHUNK):
            async with conn.transaction():
                for table, rows in _rows(min(CHUNK, count - start), start, batch, now).items():
                    n = len(rows[0])
                    await conn.executemany(_SQL[table].format(*[f"${i + 1}" for i in range(n)]), rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def final_jobs(database_url: str) -> int:
    """Jobs in a final state: the expired ones the pruner has not reached yet (the webhooks' own
    jobs only reach fetching)."""
    from service.store import open_store_for

    store = open_store_for(database_url)
    await store.open()
    try:
        counts = await store.job_counts()
    finally:
        await store.close()
    return int(sum(n for s, n in counts.items() if s in ("succeeded", "failed", "cancelled", "expired")))


def measure_one(database_url: str, work: Path, expired: int, *, pruning: bool, duration_s: float) -> dict[str, Any]:
    """Ingest (req/s) on a database holding `expired` expired jobs, with or without the pruner."""
    previous = os.environ.get("SEGFLOW_BENCH_ROLES")
    os.environ["SEGFLOW_BENCH_ROLES"] = "pruner" if pruning else ""  # read by ingest.serve
    try:
        result = ingest.measure("segflow", database_url, work, duration_s=duration_s, concurrency=64, generators=2)
    finally:
        if previous is None:
            os.environ.pop("SEGFLOW_BENCH_ROLES", None)
        else:
            os.environ["SEGFLOW_BENCH_ROLES"] = previous
    result["jobs_pruned"] = expired - asyncio.run(final_jobs(database_url))
    return result


class Template:
    """The seeded database, copied for each run (seeding a million jobs once, not per run)."""

    def __init__(self, db: str, folder: Path, expired: int) -> None:
        self.db, self.folder = db, folder
        if db == "sqlite":
            self.url = f"sqlite:///{folder / 'template.db'}"
        else:
            self.name = f"segflow_bench_tpl_{uuid.uuid4().hex[:8]}"
            asyncio.run(self._admin(f'CREATE DATABASE "{self.name}" TEMPLATE template0'))
            self.url = _dsn().rsplit("/", 1)[0] + f"/{self.name}"
        asyncio.run(seed_expired(self.url, expired))

    def copy(self, into: Path) -> tuple[str, Any]:
        """(URL of a fresh copy, function that removes it)."""
        if self.db == "sqlite":
            target = into / "bench.db"
            shutil.copyfile(self.folder / "template.db", target)
            return f"sqlite:///{target}", lambda: None
        name = f"segflow_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"'))
        return _dsn().rsplit("/", 1)[0] + f"/{name}", lambda: asyncio.run(self._admin(_drop_sql(name)))

    def remove(self) -> None:
        if self.db != "sqlite":
            asyncio.run(self._admin(_drop_sql(self.name)))

    async def _admin(self, statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(_dsn(), timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()


def _dsn() -> str:
    from benchmarks.run import DSN

    return DSN


def _drop_sql(name: str) -> str:
    return f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'


async def _postgres_reachable() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(_dsn(), timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def rows(runs: int, duration_s: float, full: bool) -> list[dict[str, Any]]:
    """One row per database: ingest with the pruner busy, against ingest without it."""
    expired = 1_000_000 if full else 100_000
    make = "make bench-full" if full else "make bench"
    out: list[dict[str, Any]] = []
    for db in ("sqlite", "postgres"):
        name = f"webhook ingest while the pruner deletes {expired:,} expired jobs: segflow, {db}"
        if db == "postgres" and not asyncio.run(_postgres_reachable()):
            out.append({"benchmark": name, "not_run": f"PostgreSQL not reachable at {_dsn()}"})
            continue
        figures: dict[bool, list[float]] = {False: [], True: []}
        pruned: list[int] = []
        with tempfile.TemporaryDirectory(prefix="segflow-bench-tpl-") as seed_dir:
            template = Template(db, Path(seed_dir), expired)
            try:
                for _ in range(runs):
                    for pruning in (False, True):  # interleaved: drift on a shared machine hits both alike
                        with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
                            url, remove = template.copy(Path(tmp))
                            try:
                                result = measure_one(url, Path(tmp), expired, pruning=pruning, duration_s=duration_s)
                            finally:
                                remove()
                        if result["errors"] or result.get("moved") != result["sent"]:
                            raise RuntimeError(f"ingest under pruning: {result}")
                        figures[pruning].append(result["rps"])
                        if pruning:
                            pruned.append(result["jobs_pruned"])
            finally:
                template.remove()
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
                "jobs_pruned_during_run": statistics.median(pruned),
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

    full = "--full" in sys.argv
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else (5 if full else 3)
    print(json.dumps(rows(runs, 8.0 if full else 4.0, full), indent=2))
