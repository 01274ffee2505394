"""Webhook verification cost: server CPU per request for a wrong secret against a valid delivery,
with one and four master keys (issue 13: a wrong secret must cost at most 1.2 times a right one).

The server under test is `segflow` in its own process (uvicorn + httptools, as in ingest.py); its
CPU time is read from /proc before and after each phase, so the load generator's CPU is not
counted. A valid request is a first completion webhook for a distinct job (verified, decoded,
made durable); a wrong one is the same request with a wrong secret. Phases alternate, and the
median over runs is kept. `python -m benchmarks.webhook_cost` measures and merges its rows into
results.json and RESULTS.md; benchmarks.run calls `rows()`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.ingest import KEY, _wait_port, prepare, requests_for
from benchmarks.machine import free_port
from service.serving import run as run_server
from service.webhook_secrets import WebhookSecrets, webhook_path

OTHER_KEYS = ("bench-second-master-key-0123456789", "bench-third-master-key-01234567", "bench-fourth-key-0123456789ab")
TICKS = os.sysconf("SC_CLK_TCK")


async def serve(port: int, database_url: str, keys: int) -> None:
    import uvicorn

    from service.app import create_app
    from service.context import open_services
    from service.logs import configure_logging
    from service.settings import Settings

    configure_logging("json", "error")
    settings = Settings(
        database_url=database_url,
        webhook_keys=(KEY, *OTHER_KEYS[: keys - 1]),
        upstream_url="http://127.0.0.1:9",
        upstream_api_key="bench-upstream-key-0123456789",
        artifact_dir=str(Path(database_url.removeprefix("sqlite:///")).parent / "artifacts"),
    )
    services = await open_services(settings)
    config = uvicorn.Config(
        create_app(services, roles=()),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="error",
        lifespan="on",
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await services.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def _send(url: str, requests: list[tuple[str, str, bytes]], concurrency: int) -> dict[int, int]:
    import aiohttp

    statuses: dict[int, int] = {}
    queue = iter(requests)

    async def worker(http: aiohttp.ClientSession) -> None:
        for path, secret, body in queue:
            headers = {"x-webhook-secret": secret, "content-type": "application/json"}
            async with http.post(url + path, data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return statuses


def _phases(pairs: list[tuple[str, str]], per_phase: int, runs: int) -> list[tuple[str, list[tuple[str, str, bytes]]]]:
    """(phase name, requests) in the order sent: valid, then each kind of wrong one, per run."""
    signed = zip(requests_for(pairs), pairs, strict=True)
    valid = [(webhook_path(job, 1), secret, body) for (_, secret, body), (job, _) in signed]
    wrong_secret = WebhookSecrets([b"not-a-configured-key-0123456789"])
    out = []
    for r in range(runs):
        chunk = valid[r * per_phase : (r + 1) * per_phase]
        out.append(("valid", chunk))
        out.append(("wrong secret", [(p, wrong_secret.derive(p.split("/")[3], 1), b) for p, _, b in chunk]))
        out.append(("wrong secret, old endpoint", [(p.rsplit("/", 1)[0], "x" * 43, b) for p, _, b in chunk]))
        out.append(
            ("wrong secret, 60 KB job id", [(f"/webhooks/qubico/{'j' * 60_000}/1", "x" * 43, b) for _, _, b in chunk])
        )
    return out


def measure(keys: int, per_phase: int, runs: int) -> dict[str, list[float]]:
    """CPU ms per request of the server, per phase, one value per run."""
    with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        pairs = asyncio.run(prepare(database_url, per_phase * runs))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.webhook_cost", "serve", str(port), database_url, str(keys)],
            stdout=subprocess.DEVNULL,
        )
        cost: dict[str, list[float]] = {}
        try:
            _wait_port(port)
            asyncio.run(_send(f"http://127.0.0.1:{port}", [("/healthz", "", b"")] * 50, 4))  # warm up
            for name, requests in _phases(pairs, per_phase, runs):
                before = _cpu_s(server.pid)
                statuses = asyncio.run(_send(f"http://127.0.0.1:{port}", requests, 16))
                spent = _cpu_s(server.pid) - before
                expected = 200 if name == "valid" else (404 if "job id" in name else 401)
                if statuses != {expected: len(requests)}:
                    raise RuntimeError(f"{name}: answers {statuses}, expected {expected} for all")
                cost.setdefault(name, []).append(1000 * spent / len(requests))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return cost


def rows(full: bool = False) -> list[dict[str, Any]]:
    from benchmarks.run import make_target, row

    per_phase, runs = (4000, 5) if full else (2000, 3)
    command = f"{make_target(full)}  (benchmarks/webhook_cost.py, {per_phase} requests per phase)"
    out = []
    for keys in (1, 4):
        cost = measure(keys, per_phase, runs)
        valid = statistics.median(cost["valid"])
        noun = "key" if keys == 1 else "keys"
        out.append(
            row(f"webhook CPU, valid delivery, {keys} {noun} (baseline)", "ms/req", cost["valid"], valid, command)
        )
        for name in ("wrong secret", "wrong secret, old endpoint", "wrong secret, 60 KB job id"):
            out.append(row(f"webhook CPU, {name}, {keys} {noun}", "ms/req", cost[name], valid, command))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("database_url")
    s.add_argument("keys", type=int)
    m = sub.add_parser("measure", help="measure and merge these rows into results.json and RESULTS.md")
    m.add_argument("--full", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        run_server(serve(args.port, args.database_url, args.keys))
        return
    from benchmarks.run import HERE, render

    started = time.time()
    measured = rows(args.full)
    path = HERE / "results.json"
    results = json.loads(path.read_text())
    results["rows"] = [r for r in results["rows"] if not r["benchmark"].startswith("webhook CPU")] + measured
    path.write_text(json.dumps(results, indent=2))
    render(results)
    print(orjson.dumps(measured, option=orjson.OPT_INDENT_2).decode(), f"\n{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
