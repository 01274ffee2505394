"""Recovery benchmarks (issue 16): how fast segflow gets every job final after a crash, lost
webhooks and lost create answers, what that costs in duplicates and polls. Each scenario runs
`segflow serve` and the sandbox as processes on a fresh SQLite file, with segflow's default
schedules (poll_after_s 30, adoption window 600 s, upstream timeout 30 s, lease 15 s)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.flows import _submit, segflow_env, stop
from benchmarks.ingest import _wait_port
from benchmarks.machine import free_port
from service.invariants import paid_tasks_by_job
from service.webhook_secrets import job_of_endpoint

SAMPLES = ("street.jpg", "portrait.jpg", "shapes.png")
NOTES = ("duplicates_paid", "succeeded", "max_s", "batch_s")
"""The extra figures of these rows that RESULTS.md shows under each."""
# Rates as a user would run: creates at the default 10/s, so a kill finds claims not yet sent.
_ENV = {"SEGFLOW_CREATES_PER_S": "10", "SEGFLOW_SUBMIT_CONCURRENCY": "16", "SEGFLOW_SUBMIT_BATCH": "32"}


def _sandbox(work: Path, latency: tuple[float, float], *faults: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = ["--port", str(port), "--latency-min", str(latency[0]), "--latency-max", str(latency[1])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "sandbox", *args, "--log-level", "error", *faults],
        stdout=subprocess.DEVNULL,
        stderr=(work / "sandbox.log").open("ab"),
    )
    _wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def _segflow(work: Path, sandbox_url: str, port: int, **extra: str) -> subprocess.Popen[bytes]:
    """`segflow serve` on `port` (a restart keeps the port: the webhook URLs upstream stay valid)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=segflow_env(work, port, sandbox_url, **{**_ENV, **extra}),
        stdout=subprocess.DEVNULL,
        stderr=(work / "segflow.log").open("ab"),
    )
    _wait_port(port)
    return proc


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"recovery benchmark: {what} not reached after {timeout_s} s")
        await asyncio.sleep(0.1)


def _jobs(work: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(work / "segflow.db")
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT id, state, finished_at FROM jobs"))
    finally:
        conn.close()


def _all_final(work: Path, n: int) -> Any:
    async def check() -> bool:
        rows = _jobs(work)
        return len(rows) == n and all(r["finished_at"] is not None for r in rows)

    return check


def _duplicates(tasks: list[dict[str, Any]]) -> int:
    return sum(len(t) - 1 for t in paid_tasks_by_job(tasks).values())


def _items(sandbox_url: str, n: int) -> list[dict[str, Any]]:
    return [{"image": f"{sandbox_url}/samples/{SAMPLES[i % 3]}", "prompt": f"object {i}"} for i in range(n)]


def kill_restart(work: Path, n: int = 80) -> dict[str, float]:
    """SIGKILL once 24 tasks exist (latency 1-3 s, 20 % of webhooks dropped), restart at once on the
    same files: seconds from the restart to the last job final, and paid duplicates."""
    sandbox, url = _sandbox(work, (1.0, 3.0), "--webhook-drop", "0.2")
    port = free_port()
    first = _segflow(work, url, port)
    second = None
    try:

        async def run() -> dict[str, float]:
            started = time.time()
            await _submit(port, _items(url, n))

            async def created() -> bool:
                return int((await _get(f"{url}/_sandbox/stats"))["tasks_created"]) >= 24

            await _until(created, 60, "24 tasks")
            first.send_signal(signal.SIGKILL)
            first.wait()
            nonlocal second
            restarted = time.time()
            second = _segflow(work, url, port)
            await _until(_all_final(work, n), 900, "every job final")
            rows = _jobs(work)
            tasks = await _get(f"{url}/_sandbox/tasks")
            return {
                "restart_to_last_final_s": max(r["finished_at"] for r in rows) - restarted,
                "batch_s": max(r["finished_at"] for r in rows) - started,
                "succeeded": sum(1 for r in rows if r["state"] == "succeeded"),
                "duplicates_paid": _duplicates(tasks),
                "lost_creates": 0,
            }

        return asyncio.run(run())
    finally:
        stop(*(p for p in (first, second, sandbox) if p is not None))


def clean_batch(work: Path, n: int = 80) -> float:
    """The same batch with no kill and every webhook delivered: the baseline of the kill's figure."""
    sandbox, url = _sandbox(work, (1.0, 3.0))
    port = free_port()
    proc = _segflow(work, url, port)
    try:

        async def run() -> float:
            started = time.time()
            await _submit(port, _items(url, n))
            await _until(_all_final(work, n), 300, "every job final")
            return max(r["finished_at"] for r in _jobs(work)) - started

        return asyncio.run(run())
    finally:
        stop(proc, sandbox)


def lag_after_end(work: Path, n: int = 40, **extra: str) -> list[float]:
    """Seconds from each task's `ended_at` upstream to its job final (latency 1-2 s) with every
    webhook dropped: each completion is learned by polling."""
    sandbox, url = _sandbox(work, (1.0, 2.0), "--webhook-drop", "1.0", "--webhook-retries", "0")
    port = free_port()
    proc = _segflow(work, url, port, **extra)
    try:

        async def run() -> list[float]:
            await _submit(port, _items(url, n))
            await _until(_all_final(work, n), 300, "every job final")
            finished = {r["id"]: r["finished_at"] for r in _jobs(work)}
            lags = []
            for t in await _get(f"{url}/_sandbox/tasks"):
                job_id = job_of_endpoint(t["webhook_endpoint"])
                ended = datetime.fromisoformat(t["ended_at"]).timestamp()
                lags.append(finished[job_id] - ended)
            return lags

        return asyncio.run(run())
    finally:
        stop(proc, sandbox)


def lost_creates(work: Path, n: int = 60) -> dict[str, float]:
    """10 % of create answers lost (latency 1-3 s): duplicates paid, and how long the batch took."""
    sandbox, url = _sandbox(work, (1.0, 3.0), "--create-lost", "0.1")
    port = free_port()
    proc = _segflow(work, url, port)
    try:

        async def run() -> dict[str, float]:
            started = time.time()
            await _submit(port, _items(url, n))
            await _until(_all_final(work, n), 900, "every job final")
            stats = await _get(f"{url}/_sandbox/stats")
            return {
                "duplicates_paid": _duplicates(await _get(f"{url}/_sandbox/tasks")),
                "lost": int(stats["faults"]["create_lost"]),
                "batch_s": max(r["finished_at"] for r in _jobs(work)) - started,
            }

        return asyncio.run(run())
    finally:
        stop(proc, sandbox)


def polls_per_job(work: Path, n: int = 200) -> float:
    """GET /task calls per job when every webhook arrives (latency 1-3 s)."""
    sandbox, url = _sandbox(work, (1.0, 3.0))
    port = free_port()
    proc = _segflow(work, url, port, SEGFLOW_CREATES_PER_S="40")
    try:

        async def run() -> float:
            await _submit(port, _items(url, n))
            await _until(_all_final(work, n), 300, "every job final")
            return int((await _get(f"{url}/_sandbox/stats"))["gets"]) / n

        return asyncio.run(run())
    finally:
        stop(proc, sandbox)


def rows(runs: int, make: str, workdir: Any, row: Any) -> list[dict[str, Any]]:
    """The recovery rows for benchmarks/run.py (`workdir()` a fresh folder, `row` its row builder)."""
    cmd = f"{make}  (benchmarks/recovery.py"
    kills = [kill_restart(workdir()) for _ in range(runs)]
    clean = statistics.median(clean_batch(workdir()) for _ in range(runs))
    dropped = [lag_after_end(workdir()) for _ in range(runs)]
    # The schedule before issue 16: the first poll at poll_after_s (a floor as high as the cap).
    fixed = [lag_after_end(workdir(), SEGFLOW_POLL_FLOOR_S="30") for _ in range(runs)]
    lost = [lost_creates(workdir()) for _ in range(runs)]
    polls = [polls_per_job(workdir()) for _ in range(runs)]
    base_lag = statistics.median(statistics.median(d) for d in fixed)
    return [
        row(
            "recovery: SIGKILL mid-batch (80 jobs, 1-3 s, 20 % webhooks dropped), restart to last job final",
            "s",
            [k["restart_to_last_final_s"] for k in kills],
            clean,
            f"{cmd} kill_restart; baseline: the same batch from submit to last final, no kill; target <= 60 s)",
            duplicates_paid=max(k["duplicates_paid"] for k in kills),
            succeeded=min(k["succeeded"] for k in kills),
        ),
        row(
            "recovery: every webhook dropped (40 jobs, 1-2 s), upstream ended_at to job final, median",
            "s",
            [statistics.median(d) for d in dropped],
            base_lag,
            f"{cmd} lag_after_end; baseline: first poll fixed at poll_after_s 30 s; target median <= 5 s, max <= 15 s)",
            max_s=max(max(d) for d in dropped),
        ),
        row(
            "recovery: 10 % of create answers lost (60 jobs, 1-3 s), paid duplicates",
            "tasks",
            [float(x["duplicates_paid"]) for x in lost],
            max(1.0, statistics.median(float(x["lost"]) for x in lost)),
            f"{cmd} lost_creates; baseline: the lost answers, each a duplicate if re-sent blind; target 0)",
            batch_s=statistics.median(x["batch_s"] for x in lost),
        ),
        row(
            "recovery: polls per job, no webhook lost (200 jobs, 1-3 s)",
            "GETs/job",
            polls,
            1.0,
            f"{cmd} polls_per_job; baseline: one poll per job; target <= 0.05)",
        ),
    ]
