"""Fan-out, reconciler, end-to-end and memory benchmarks (each against its baseline or sizes)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.ingest import KEY, _wait_port
from benchmarks.machine import free_port

API_KEY = "bench-tenant-key-0123456789abcdef"


def start_sandbox(work: Path, latency: tuple[str, str] = ("0", "0")) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "sandbox",
            "--port",
            str(port),
            "--latency-min",
            latency[0],
            "--latency-max",
            latency[1],
            "--no-processing-webhook",
            "--webhook-retries",
            "0",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "sandbox.log").open("ab"),
    )
    _wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def segflow_env(work: Path, port: int, sandbox_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SEGFLOW_DATABASE_URL": f"sqlite:///{work / 'segflow.db'}",
        "SEGFLOW_ARTIFACT_DIR": str(work / "art"),
        "SEGFLOW_UPSTREAM_URL": sandbox_url,
        "SEGFLOW_UPSTREAM_API_KEY": "sandbox-key",
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
        "SEGFLOW_WEBHOOK_KEYS": KEY,
        "SEGFLOW_API_KEYS": f"bench:{API_KEY}",
        "SEGFLOW_LOG_LEVEL": "error",
        "SEGFLOW_CREATES_PER_S": "0",
        "SEGFLOW_SUBMIT_CONCURRENCY": "64",
        "SEGFLOW_SUBMIT_BATCH": "256",
        "SEGFLOW_MAX_IN_FLIGHT": "100000",
        "SEGFLOW_SUBMIT_INTERVAL_S": "0.05",
        **extra,
    }


def start_segflow(work: Path, sandbox_url: str, *args: str, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", *args],
        env=segflow_env(work, port, sandbox_url, **extra),
        stdout=subprocess.DEVNULL,
        stderr=(work / "segflow.log").open("ab"),
    )
    _wait_port(port)
    return proc, port


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _submit(port: int, items: list[dict[str, Any]]) -> list[str]:
    headers = {"authorization": f"Bearer {API_KEY}"}
    ids: list[str] = []
    async with aiohttp.ClientSession() as http:
        for i in range(0, len(items), 1000):
            async with http.post(
                f"http://127.0.0.1:{port}/v1/batches", json={"items": items[i : i + 1000]}, headers=headers
            ) as resp:
                assert resp.status == 202, await resp.text()
                ids += [j["job_id"] for j in (await resp.json())["jobs"]]
    return ids


async def _stats(sandbox_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{sandbox_url}/_sandbox/stats") as resp:
        return dict(await resp.json())


async def _until(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark did not finish in time")
        await asyncio.sleep(0.05)


# fan-out ---------------------------------------------------------------------------------------


def fanout(work: Path, n: int) -> tuple[float, float]:
    """(segflow submitter creates/s, bare aiohttp loop creates/s), each to a fresh sandbox so neither
    meets the other's tasks."""
    sandbox, sandbox_url = start_sandbox(work)
    try:
        segflow_rate, port = _submitter_rate(work, sandbox_url, n)
    finally:
        stop(sandbox)
    sandbox, sandbox_url = start_sandbox(work)
    try:
        bare_rate = asyncio.run(_bare_loop(sandbox_url, f"{sandbox_url}/samples/shapes.png", n, port))
    finally:
        stop(sandbox)
    return segflow_rate, bare_rate


def _submitter_rate(work: Path, sandbox_url: str, n: int) -> tuple[float, int]:
    """Creates per second of a submitter-only worker over n queued jobs; and segflow's port."""
    image = f"{sandbox_url}/samples/shapes.png"
    segflow, port = start_segflow(work, sandbox_url, "--no-workers")
    asyncio.run(_submit(port, [{"image": image, "prompt": f"p{i}"} for i in range(n)]))
    stop(segflow)
    # Only the submitter runs, so like the bare loop it spends nothing on the webhooks it causes
    # (they find no listener); it starts on a full queue.
    submitter = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker", "--role", "submitter"],
        env=segflow_env(work, port, sandbox_url),
        stdout=subprocess.DEVNULL,
        stderr=(work / "submitter.log").open("ab"),
    )
    try:
        # The clock starts at the first create, as the bare loop's starts with its loop: the
        # worker's interpreter start-up and imports (~0.6 s) are not the submitter's rate.
        asyncio.run(_until(lambda: _created_at_least(sandbox_url, 1), 60))
        started = time.perf_counter()
        first = int(asyncio.run(_stats(sandbox_url))["tasks_created"])
        asyncio.run(_until(lambda: _created_at_least(sandbox_url, n), 300))
        return (n - first) / (time.perf_counter() - started), port
    finally:
        stop(submitter)


async def _created_at_least(sandbox_url: str, n: int) -> bool:
    return int((await _stats(sandbox_url))["tasks_created"]) >= n


async def _bare_loop(sandbox_url: str, image: str, n: int, port: int) -> float:
    """The same create bodies (webhook config included), 64 at a time, as fast as the sandbox takes them."""
    bodies = [
        orjson.dumps(
            {
                "model": "Qubico/image-toolkit",
                "task_type": "segment",
                "input": {"image": image, "prompt": f"b{i}", "negative_prompt": "", "segment_factor": 0},
                "config": {
                    "service_mode": "",
                    "webhook_config": {
                        "endpoint": f"http://127.0.0.1:{port}/webhooks/qubico/{uuid.uuid4()}",
                        "secret": "x" * 43,
                    },
                },
            }
        )
        for i in range(n)
    ]
    queue = iter(bodies)
    headers = {"x-api-key": "sandbox-key", "content-type": "application/json"}

    async def worker(http: aiohttp.ClientSession) -> None:
        for body in queue:
            async with http.post(f"{sandbox_url}/api/v1/task", data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        await asyncio.gather(*(worker(http) for _ in range(64)))
    elapsed = time.perf_counter() - started
    assert int((await _stats(sandbox_url))["tasks_created"]) == n
    return n / elapsed


# reconciler ------------------------------------------------------------------------------------


def seed_jobs(db: Path, total: int, overdue: int, in_flight: int = 0) -> None:
    """`total` jobs: `overdue` submitted and due now, `in_flight` submitted and due later, the rest
    succeeded. Written with plain SQL for speed, after segflow's own migrations."""
    from service.store import open_store_for

    async def migrate() -> None:
        store = open_store_for(f"sqlite:///{db}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    now = time.time()
    batch = str(uuid.uuid4())
    conn = sqlite3.connect(db)
    sql = (
        "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, state, "
        "attempt, task_id, created_at, updated_at, next_check_at) VALUES (?, ?, 'bench', ?, 'https://i.example/a.png', "
        "'car', '', 0, ?, 1, ?, ?, ?, ?)"
    )

    def rows() -> Any:
        for i in range(total):
            if i < overdue:
                yield (str(uuid.uuid4()), batch, i, "submitted", str(uuid.uuid4()), now, now, now - 1)
            elif i < overdue + in_flight:
                yield (str(uuid.uuid4()), batch, i, "submitted", str(uuid.uuid4()), now, now, now + 86400)
            else:
                yield (str(uuid.uuid4()), batch, i, "succeeded", str(uuid.uuid4()), now, now, None)

    with conn:
        conn.execute(
            "INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at)"
            " VALUES (?, 'bench', NULL, NULL, 'h', ?, ?)",
            (batch, total, now),
        )
        conn.executemany(sql, rows())
    conn.close()


def reconcile_round(work: Path, total: int, overdue: int = 1000) -> tuple[float, int]:
    """(seconds, SQL statements) of one reconciler round over `total` stored jobs, `overdue` due."""
    from service.context import open_services
    from service.reconciler import Reconciler
    from service.settings import Settings

    db = work / f"reconcile-{total}.db"
    seed_jobs(db, total, overdue)
    sandbox, sandbox_url = start_sandbox(work)
    statements = 0

    def count(_sql: str) -> None:
        nonlocal statements
        statements += 1

    async def run() -> float:
        settings = Settings(
            database_url=f"sqlite:///{db}",
            webhook_keys=(KEY,),
            upstream_url=sandbox_url,
            upstream_api_key="sandbox-key",
            upstream_is_sandbox=True,
            reconcile_batch=overdue,
            reconcile_concurrency=32,
            artifact_dir=str(work / "art"),
        )
        services = await open_services(settings)
        driver: Any = services.store.driver
        for conn, thread in ((driver._w, driver._writer), (driver._r, driver._reader)):  # what the round asks
            await asyncio.get_running_loop().run_in_executor(thread, conn.set_trace_callback, count)
        try:
            started = time.perf_counter()
            await Reconciler(services).round()
            return time.perf_counter() - started
        finally:
            await services.close()

    try:
        seconds = asyncio.run(run())
    finally:
        stop(sandbox)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return seconds, statements


# end to end and memory ---------------------------------------------------------------------------


def end_to_end(work: Path, n: int, *, floor: bool = False) -> dict[str, float]:
    """`n` jobs through segflow (or, `floor`, through `benchmarks/e2e_floor.py`) and the sandbox."""
    sandbox, sandbox_url = start_sandbox(work)
    try:
        if floor:
            segflow, port = start_floor(work, sandbox_url)
        else:
            segflow, port = start_segflow(
                work,
                sandbox_url,
                SEGFLOW_FETCH_CONCURRENCY="32",
                SEGFLOW_FETCH_BATCH="128",
                SEGFLOW_FETCH_INTERVAL_S="0.05",
            )
        cpu0 = cpu_seconds(segflow.pid)
        started = time.perf_counter()
        image = f"{sandbox_url}/samples/shapes.png"
        asyncio.run(_submit(port, [{"image": image, "prompt": f"p{i}"} for i in range(n)]))
        db = work / "segflow.db"
        asyncio.run(_until(lambda: _all_succeeded(db, n), 600))
        wall = time.perf_counter() - started
        cpu = cpu_seconds(segflow.pid) - cpu0
        stop(segflow)
    finally:
        stop(sandbox)
    result = {"wall_s": wall, "cpu_ms_per_job": 1000 * cpu / n, "jobs_per_s": n / wall}
    if floor:  # it keeps no event log to time the stored masks by
        return result
    conn = sqlite3.connect(db)
    lags = sorted(
        r[0]
        for r in conn.execute(
            "SELECT e.at - j.completed_at FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.event = 'stored'"
        )
    )
    conn.close()
    return {
        **result,
        "stored_p50_ms": 1000 * statistics.median(lags),
        "stored_p99_ms": 1000 * lags[int(len(lags) * 0.99)],
    }


def start_floor(work: Path, sandbox_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    db, art = work / "segflow.db", work / "art"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.e2e_floor",
            "--port",
            str(port),
            "--db",
            str(db),
            "--art",
            str(art),
            "--upstream",
            sandbox_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "floor.log").open("ab"),
    )
    _wait_port(port)
    return proc, port


def mask_write_cpu_ms(work: Path, n: int = 1000) -> float:
    """CPU (user + system) per mask written the way the fetcher writes each one in `end_to_end`:
    `LocalArtifactStore.write` of one sandbox mask under a job folder of its own (temporary file,
    fsync, rename, fsync of the folder). Part of every job's CPU that no store change can remove."""
    import resource

    from service.artifacts import mask_key, one_chunk
    from service.artifacts_local import LocalArtifactStore
    from service.sandbox.masks import MaskSpec, render_mask

    png = render_mask(MaskSpec("0" * 64, 640, 480, "bench", "", 0))
    store = LocalArtifactStore(work / "artifacts")

    async def run() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        before = usage.ru_utime + usage.ru_stime
        for _ in range(n):
            key = mask_key("bench", str(uuid.uuid4()), 0)
            await store.write(key, one_chunk(png), max_bytes=len(png), content_type="image/png")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return 1000 * (usage.ru_utime + usage.ru_stime - before) / n

    return asyncio.run(run())


async def _all_succeeded(db: Path, n: int) -> bool:
    conn = sqlite3.connect(db, timeout=30)
    try:
        done = conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()[0]
    finally:
        conn.close()
    return bool(done >= n)


def memory(work: Path, stored: int, in_flight: int) -> float:
    """Peak RSS (MB) of `segflow serve` over `stored` jobs with `in_flight` of them awaiting tasks."""
    seed_jobs(work / "segflow.db", stored, overdue=0, in_flight=in_flight)
    sandbox, sandbox_url = start_sandbox(work)
    try:
        segflow, _port = start_segflow(work, sandbox_url)
        time.sleep(5)  # every role runs a few rounds over the stored and in-flight jobs
        rss = peak_rss_mb(segflow.pid)
        stop(segflow)
    finally:
        stop(sandbox)
    return rss
