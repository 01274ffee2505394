"""What observing a request costs: CPU per request of a minimal Starlette endpoint, bare and
wrapped the way segflow wraps its app (access log + HTTP metrics; tracing off, then on with spans
exported to nowhere), driven by direct ASGI calls so no network or load generator adds noise.
Ratios against the bare endpoint measured in the same run, median of interleaved rounds.

Then what a /metrics scrape costs the store on a large table: `gauge_counts` (the scrape's
indexed counts) against a plain `GROUP BY state` over every job, on a SQLite file holding
`--scrape-jobs` finished jobs and a thousand live ones.

    .venv/bin/python -m benchmarks.observe_overhead [--requests 20000] [--rounds 5] [--scrape-jobs 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.access_log import AccessLog
from service.metrics import Metrics
from service.settings import Settings
from service.tracing import Tracing


class _Nowhere(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def _hook(_request: Request) -> Response:
    return Response(b'{"status":"applied"}', media_type="application/json")


def _app(variant: str) -> Starlette:
    app = Starlette(routes=[Route("/webhooks/qubico/{job_id}", _hook, methods=["POST"])])
    if variant != "bare":
        app.add_middleware(AccessLog, metrics=Metrics(), log_requests=variant == "access log on")
    if variant == "tracing on":
        Tracing.from_settings(Settings(tracing="on"), exporter=_Nowhere()).instrument_app(app)
    return app


async def _drive(app: Starlette, n: int) -> float:
    """CPU seconds per request for `n` POSTs."""
    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/qubico/0f8c2d4e-1111-4a2b-9c3d-5e6f7a8b9c0d",
        "raw_path": b"/webhooks/qubico/0f8c2d4e-1111-4a2b-9c3d-5e6f7a8b9c0d",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8600),
    }
    body = {"type": "http.request", "body": b"{}", "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(_message: dict[str, Any]) -> None:
        return None

    started = time.process_time()
    for _ in range(n):
        await app(dict(scope_base, state={}), receive, send)
    return (time.process_time() - started) / n


async def _scrape_cost(jobs: int, rounds: int) -> tuple[float, float]:
    """Median seconds of (gauge_counts, SELECT state, count(*) … GROUP BY state) with `jobs` rows."""
    import sqlite3
    import tempfile
    import uuid
    from pathlib import Path

    from service.store import open_store_for

    path = Path(tempfile.mkdtemp()) / "scrape.db"
    store = open_store_for(f"sqlite:///{path}")
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    now = time.time()
    cols = "id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, state, created_at, updated_at"
    sql = f"INSERT INTO jobs ({cols}) VALUES (?, 'b', 't', ?, 'i', 'p', '', 0, ?, ?, ?)"
    with conn:
        for start in range(0, jobs + 1000, 100_000):
            rows = [
                (uuid.uuid4().hex, i, "succeeded" if i < jobs else "queued", now - i, now)
                for i in range(start, min(start + 100_000, jobs + 1000))
            ]
            conn.executemany(sql, rows)
    conn.execute("ANALYZE")
    conn.close()
    store = open_store_for(f"sqlite:///{path}")
    await store.open()
    gauges, scan = [], []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            counts = await store.gauge_counts()
            gauges.append(time.perf_counter() - t)
            t = time.perf_counter()
            await store.job_counts()
            scan.append(time.perf_counter() - t)
        assert counts["queued"] == 1000
    finally:
        await store.close()
    return statistics.median(gauges), statistics.median(scan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scrape-jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    import structlog

    from service.logs import configure_logging

    configure_logging("json", "info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(io.StringIO()))  # rendered, then dropped
    variants = ["bare", "access log off", "access log on", "tracing on"]
    apps: dict[str, Starlette] = {v: _app(v) for v in variants}
    results: dict[str, list[float]] = {v: [] for v in variants}
    run: Callable[[Starlette, int], Any] = _drive
    for _ in range(args.rounds):
        for v in variants:  # interleaved, so drift on a shared machine hits every variant alike
            results[v].append(asyncio.run(run(apps[v], args.requests)))
    bare = statistics.median(results["bare"])
    print(f"{'variant':<16} {'us/request':>10} {'x bare':>7} {'+us':>7}")
    for v in variants:
        med = statistics.median(results[v])
        print(f"{v:<16} {med * 1e6:>10.1f} {med / bare:>7.2f} {(med - bare) * 1e6:>7.1f}")
    if args.scrape_jobs:
        gauges, scan = asyncio.run(_scrape_cost(args.scrape_jobs, args.rounds))
        print(f"scrape with {args.scrape_jobs:,} finished + 1,000 live jobs (SQLite):")
        print(f"  gauge_counts (indexed)      {gauges * 1000:8.2f} ms")
        print(f"  GROUP BY state (every job)  {scan * 1000:8.2f} ms   ({scan / gauges:.0f}x)")


if __name__ == "__main__":
    main()
