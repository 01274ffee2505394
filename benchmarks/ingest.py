"""Webhook ingest: verified, durable completions per second into segflow, against a bare
Starlette endpoint (read body, constant-time secret check, JSON parse) under the same load.

Processes: the server under test (segflow, bare, the peer of `peer.py` or the floor of `floor.py`;
uvicorn with uvloop + httptools, access log off) and `GENERATORS` aiohttp load-generator
processes, each with its own share of distinct jobs.
Run `python -m benchmarks.ingest serve|generate …` pieces by hand, or all of it via benchmarks.run.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from service.serving import run as run_server
from service.webhook_secrets import WebhookSecrets, webhook_path

KEY = "bench-webhook-master-key-0123456789"
EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "upstream" / "webhook-completed.json"
_TASK_SQL = "INSERT INTO tasks (task_id, job_id, attempt, origin, status, created_at, updated_at) VALUES"


# preparing jobs ------------------------------------------------------------------------------


async def prepare(database_url: str, count: int) -> list[tuple[str, str]]:
    """`count` jobs in state submitted, each with its upstream task; returns (job_id, task_id)."""
    from service.store import open_store_for

    store = open_store_for(database_url)
    await store.open()  # migrations
    await store.close()
    now = time.time()
    pairs = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(count)]
    batch = str(uuid.uuid4())
    jobs = [
        (j, batch, "bench", i, "https://img.example/a.png", "car", "", 0, None, "submitted", 1, t, now, now, now + 3600)
        for i, (j, t) in enumerate(pairs)
    ]
    tasks = [(t, j, 1, "created", "pending", now, now) for j, t in pairs]
    job_sql = (
        "INSERT INTO jobs (id, batch_id, tenant, seq, image, prompt, negative_prompt, segment_factor, "
        "metadata, state, attempt, task_id, created_at, updated_at, next_check_at) VALUES ({})"
    )
    if database_url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(
                "INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at)"
                " VALUES (?, 'bench', NULL, NULL, 'h', ?, ?)",
                (batch, count, now),
            )
            conn.executemany(job_sql.format(", ".join("?" * 15)), jobs)
            conn.executemany(f"{_TASK_SQL} (?, ?, ?, ?, ?, ?, ?)", tasks)
        conn.close()
    else:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO batches (id, tenant, callback_url, idempotency_key, request_hash, total, created_at)"
                    " VALUES ($1, 'bench', NULL, NULL, 'h', $2, $3)",
                    batch,
                    count,
                    now,
                )
                await conn.executemany(job_sql.format(", ".join(f"${i}" for i in range(1, 16))), jobs)
                await conn.executemany(f"{_TASK_SQL} ($1, $2, $3, $4, $5, $6, $7)", tasks)
        finally:
            await conn.close()
    return pairs


def requests_for(pairs: list[tuple[str, str]]) -> list[tuple[str, str, bytes]]:
    """(path, secret, body) of a completion webhook for each job, as the upstream would send it."""
    secrets = WebhookSecrets([KEY.encode()])
    template = orjson.loads(EXAMPLE.read_bytes())
    out = []
    for job_id, task_id in pairs:
        body = copy.deepcopy(template)
        secret = secrets.derive(job_id, 1)
        body["data"]["task_id"] = task_id
        body["data"]["config"]["webhook_config"]["secret"] = secret
        body["data"]["logs"] = ["x" * 200] * 2  # ~1.5 KB like the baseline in LIMITS.md
        out.append((webhook_path(job_id, 1), secret, orjson.dumps(body)))
    return out


# servers ---------------------------------------------------------------------------------------


def bare_app() -> Any:
    """The baseline: read the body, check the secret in constant time, parse the JSON."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    secrets = WebhookSecrets([KEY.encode()])

    async def hook(request: Request) -> Response:
        body = await request.body()
        presented = request.headers.get("x-webhook-secret", "")
        expected = secrets.derive(request.path_params["job_id"], int(request.path_params["attempt"]))
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            return Response(status_code=401)
        orjson.loads(body)
        return Response(b'{"status":"applied"}', media_type="application/json")

    return Starlette(routes=[Route("/webhooks/qubico/{job_id}/{attempt}", hook, methods=["POST"])])


async def serve(kind: str, port: int, database_url: str) -> None:
    import uvicorn

    services = None
    if kind == "bare":
        app = bare_app()
    elif kind == "peer":
        from benchmarks.peer import peer_app

        app = peer_app(database_url, KEY)
    elif kind == "floor":
        from benchmarks.floor import floor_app

        app = floor_app(database_url, KEY)
    else:
        from service.app import create_app
        from service.context import open_services
        from service.logs import configure_logging
        from service.settings import Settings

        configure_logging("json", "warning")
        settings = Settings(
            database_url=database_url,
            log_level="warning",  # as configured above: no access log, as for the bare endpoint
            webhook_keys=(KEY,),
            upstream_url="http://127.0.0.1:9",
            upstream_api_key="bench-upstream-key-0123456789",
            artifact_dir=str(Path(database_url.removeprefix("sqlite:///")).parent / "artifacts")
            if database_url.startswith("sqlite")
            else "/tmp/segflow-bench-artifacts",
        )
        services = await open_services(settings)
        # benchmarks/retention.py runs the pruner beside the webhooks (the roles `serve` would run).
        roles = tuple(r for r in os.environ.get("SEGFLOW_BENCH_ROLES", "").split(",") if r)
        app = create_app(services, roles=roles)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    profile = os.environ.get("SEGFLOW_BENCH_PROFILE")  # a file for pyinstrument's text report
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        # uvicorn raises the SIGTERM again once it has shut down: exit through `finally` then.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        await uvicorn.Server(config).serve()
    finally:
        if profiler is not None:
            profiler.stop()
            Path(profile).write_text(profiler.output_text(unicode=False, show_all=False))  # noqa: ASYNC240
        if services is not None:
            await services.close()


# the load generator ----------------------------------------------------------------------------


async def generate(
    url: str, requests: list[tuple[str, str, bytes]], concurrency: int, duration_s: float, rate: float
) -> dict[str, Any]:
    """Send each request once (distinct jobs), `concurrency` at a time, for at most `duration_s`;
    `rate` > 0 paces the sends. Returns counts and latencies."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    queue = iter(requests)
    started = time.perf_counter()
    deadline = started + duration_s
    interval = 1.0 / rate if rate > 0 else 0.0
    next_send = [started]

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        for path, secret, body in queue:
            now = time.perf_counter()
            if now > deadline:
                return
            if interval:
                slot = next_send[0]
                next_send[0] = max(slot, now) + interval
                if slot > now:
                    await asyncio.sleep(slot - now)
            t0 = time.perf_counter()
            async with http.post(
                url + path, data=body, headers={"x-webhook-secret": secret, "content-type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "sent": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


# one measurement ---------------------------------------------------------------------------------


def _wait_port(port: int, timeout_s: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"server on {port} did not start")


def measure(
    kind: str,
    database_url: str,
    workdir: Path,
    *,
    duration_s: float,
    concurrency: int,
    generators: int,
    rate: float = 0.0,
) -> dict[str, Any]:
    """Start a server, drive it from `generators` processes, check the store, stop everything."""
    from benchmarks.machine import free_port

    needed = int(max(4000, (rate or 20000) * duration_s * 1.3))
    pairs = (
        asyncio.run(prepare(database_url, needed))
        if kind != "bare"
        else [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(needed)]
    )
    requests = requests_for(pairs)
    port = free_port()
    log = (workdir / f"{kind}-server.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.ingest", "serve", kind, str(port), database_url],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        _wait_port(port)
        shares = [requests[i::generators] for i in range(generators)]
        files = []
        for i, share in enumerate(shares):
            f = workdir / f"requests-{i}.json"
            f.write_bytes(orjson.dumps([[p, s, b.decode()] for p, s, b in share]))
            files.append(f)
        gens = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.ingest",
                    "generate",
                    f"http://127.0.0.1:{port}",
                    str(f),
                    str(concurrency // generators),
                    str(duration_s),
                    str(rate / generators),
                ],
                stdout=subprocess.PIPE,
            )
            for f in files
        ]
        results = [json.loads(g.communicate(timeout=duration_s + 120)[0]) for g in gens]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    sent = sum(r["sent"] for r in results)
    elapsed = max(r["elapsed_s"] for r in results)
    out = {
        "rps": sent / elapsed,
        "sent": sent,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
    }
    if kind != "bare":
        out["moved"] = asyncio.run(_count_fetching(database_url))
    return out


async def _count_fetching(database_url: str) -> int:
    from service.store import open_store_for

    store = open_store_for(database_url)
    await store.open()
    try:
        return int((await store.job_counts()).get("fetching", 0))
    finally:
        await store.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("kind", choices=["segflow", "bare", "peer", "floor"])
    s.add_argument("port", type=int)
    s.add_argument("database_url")
    g = sub.add_parser("generate")
    g.add_argument("url")
    g.add_argument("file")
    g.add_argument("concurrency", type=int)
    g.add_argument("duration", type=float)
    g.add_argument("rate", type=float)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        run_server(serve(args.kind, args.port, args.database_url))
        return
    reqs = [(p, s, b.encode()) for p, s, b in orjson.loads(Path(args.file).read_bytes())]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(generate(args.url, reqs, args.concurrency, args.duration, args.rate))
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
