"""Load: completion webhooks at the maximum rate for a while, into a `segflow serve` whose
submitter, reconciler and fetcher are busy with a real batch against the sandbox at the same time.

    python -m tests.chaos.load --seconds 60 --database sqlite|postgres

Checks: no error answer; every acknowledged completion recorded (its job left `submitted` by a
webhook); the real batch ends with every invariant holding; the server's memory stays bounded.
Exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks import ingest
from service.artifacts_local import LocalArtifactStore
from service.invariants import check_run
from service.store import open_store_for
from tests.chaos.runner import scratch_database
from tests.fixtures.database import DSN_VARIABLE
from tests.fixtures.processes import Processes, free_port, wait_batch

API_KEY = "load-tenant-key-0123456789abcdef"
GENERATORS = 2
CONCURRENCY = 64
RSS_LIMIT_MB = 250.0
REAL_JOBS = 300
DEAD_OUTPUT = "http://127.0.0.1:9/mask.png"  # the outputs of the flooded jobs: refused at once


@dataclass
class LoadReport:
    database: str
    seconds: float
    sent: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    recorded: int = 0
    real_jobs: dict[str, int] = field(default_factory=dict)
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        lines = [
            f"load {self.database}, {self.seconds:.0f} s: {'OK' if self.ok else 'VIOLATIONS'}",
            f"  webhooks {self.sent} at {self.rps:,.0f}/s, errors {self.errors}, p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms",
            f"  completions recorded {self.recorded} of {self.sent - self.errors} acknowledged",
            f"  the real batch meanwhile: {self.real_jobs}",
            f"  server RSS {self.rss_start_mb:.0f} MB after start, peak {self.rss_peak_mb:.0f} MB "
            f"(limit {RSS_LIMIT_MB:.0f})",
        ]
        return "\n".join(lines + [f"  VIOLATION {v}" for v in self.violations[:30]])


def flood_requests(pairs: list[tuple[str, str]]) -> list[tuple[str, str, bytes]]:
    """The benchmark's completion webhooks, with outputs that fail fast so the fetcher stays busy
    without the run downloading a hundred thousand files."""
    out = []
    for path, secret, body in ingest.requests_for(pairs):
        doc = orjson.loads(body)
        doc["data"]["output"] = {"image_url": DEAD_OUTPUT, "image_urls": [DEAD_OUTPUT]}
        out.append((path, secret, orjson.dumps(doc)))
    return out


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append(int(line.split()[1]) / 1024)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def generate(url: str, requests: list[tuple[str, str, bytes]], seconds: float, workdir: Path) -> list[dict[str, Any]]:
    """The benchmark's load generator, in `GENERATORS` processes of their own."""
    gens = []
    for i in range(GENERATORS):
        f = workdir / f"load-requests-{i}.json"
        f.write_bytes(orjson.dumps([[p, s, b.decode()] for p, s, b in requests[i::GENERATORS]]))
        args = [url, str(f), str(CONCURRENCY // GENERATORS), str(seconds), "0"]
        gens.append(
            subprocess.Popen([sys.executable, "-m", "benchmarks.ingest", "generate", *args], stdout=subprocess.PIPE)
        )
    return [json.loads(g.communicate(timeout=seconds + 120)[0]) for g in gens]


async def run(database_url: str, database: str, seconds: float, workdir: Path) -> LoadReport:
    report = LoadReport(database, seconds)
    pairs = await ingest.prepare(database_url, int(5_000 + 4_000 * seconds))
    requests = flood_requests(pairs)
    procs = Processes(workdir)
    try:
        sb_port, port = free_port(), free_port()
        sandbox = f"http://127.0.0.1:{sb_port}"
        procs.start(
            "sandbox",
            ["sandbox", "--port", str(sb_port), "--latency-min", "0.1", "--latency-max", "1"],
            {},
            f"{sandbox}/samples",
        )
        url = f"http://127.0.0.1:{port}"
        env = {
            "SEGFLOW_PORT": str(port),
            "SEGFLOW_PUBLIC_URL": url,
            "SEGFLOW_DATABASE_URL": database_url,
            "SEGFLOW_ARTIFACT_DIR": str(workdir / "artifacts"),
            "SEGFLOW_UPSTREAM_URL": sandbox,
            "SEGFLOW_UPSTREAM_API_KEY": "sandbox-key",
            "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
            "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
            "SEGFLOW_WEBHOOK_KEYS": ingest.KEY,
            "SEGFLOW_API_KEYS": f"load:{API_KEY}",
            "SEGFLOW_CREATES_PER_S": "50",
            # The flooded jobs are in flight on paper only: they must not hold the real batch back.
            "SEGFLOW_MAX_IN_FLIGHT": str(len(pairs) + 100),
            "SEGFLOW_MAX_FETCH_BACKLOG": "0",  # nor, once completed, their masks that are never fetched
            "SEGFLOW_POLL_AFTER_S": "1",
            "SEGFLOW_RECONCILE_INTERVAL_S": "0.5",
            "SEGFLOW_LOG_FORMAT": "json",
            "SEGFLOW_LOG_LEVEL": os.environ.get("SEGFLOW_LOAD_LOG_LEVEL", "warning"),
        }
        server = procs.start("segflow", ["serve"], env, f"{url}/healthz")
        async with aiohttp.ClientSession() as http:
            images = [f"{sandbox}/samples/{n}" for n in ("street.jpg", "portrait.jpg", "shapes.png")]
            items = [{"image": images[i % 3], "prompt": f"thing {i}"} for i in range(REAL_JOBS)]
            headers = {"authorization": f"Bearer {API_KEY}"}
            async with http.post(f"{url}/v1/batches", json={"items": items}, headers=headers) as resp:
                assert resp.status == 202, await resp.text()
                accepted = await resp.json()
            with RssSampler(server.pid) as rss:
                results = await asyncio.to_thread(generate, url, requests, seconds, workdir)
            batch_url = f"{url}/v1/batches/{accepted['batch_id']}"
            summary = await wait_batch(http, batch_url, API_KEY, lambda b: b["done"] == b["total"], 300)
            async with http.get(f"{sandbox}/_sandbox/tasks") as resp:
                tasks = await resp.json()
        procs.stop_all()
        report.sent = sum(r["sent"] for r in results)
        report.errors = sum(r["errors"] for r in results)
        report.rps = report.sent / max(r["elapsed_s"] for r in results)
        report.p50_ms = max(r["p50_ms"] for r in results)
        report.p99_ms = max(r["p99_ms"] for r in results)
        report.real_jobs = {k: v for k, v in summary["counts"].items() if v}
        report.rss_start_mb = rss.samples[0] if rss.samples else 0.0
        report.rss_peak_mb = max(rss.samples, default=0.0)
        await _check(report, database_url, workdir, pairs, [j["job_id"] for j in accepted["jobs"]], tasks)
    finally:
        procs.stop_all()
    return report


async def _check(
    report: LoadReport,
    database_url: str,
    workdir: Path,
    pairs: list[tuple[str, str]],
    real_jobs: list[str],
    tasks: list[dict[str, Any]],
) -> None:
    if report.errors:
        report.violations.append(f"{report.errors} webhooks answered with an error")
    store = open_store_for(database_url)
    await store.open()
    try:
        for job_id, _ in pairs:
            events = await store.job_events(job_id)
            if any(e.event == "completed" and e.source == "webhook" for e in events):
                report.recorded += 1
        run = await check_run(store, LocalArtifactStore(workdir / "artifacts"), real_jobs, tasks)
    finally:
        await store.close()
    if report.recorded != report.sent - report.errors:
        report.violations.append(f"{report.sent - report.errors} completions acknowledged, {report.recorded} recorded")
    report.violations.extend(run.violations)
    if report.rss_peak_mb > RSS_LIMIT_MB:
        report.violations.append(f"server RSS peaked at {report.rss_peak_mb:.0f} MB")


@contextlib.asynccontextmanager
async def database_for(kind: str, workdir: Path, admin_dsn: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'segflow.db'}"
        return
    async with scratch_database(admin_dsn) as url:
        yield url


async def load(kind: str, seconds: float, workdir: Path, admin_dsn: str) -> LoadReport:
    async with database_for(kind, workdir, admin_dsn) as url:
        return await run(url, kind, seconds, workdir)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.load", description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--postgres", default=os.environ.get(DSN_VARIABLE, "postgresql://postgres@127.0.0.1:5432/test"))
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="segflow-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = asyncio.run(load(args.database, args.seconds, workdir, args.postgres))
    print(report.render())
    print(f"  wall time {time.monotonic() - started:.0f} s; logs in {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
