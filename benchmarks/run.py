"""`make bench`: segflow against baselines measured in the same run, written to
benchmarks/RESULTS.md and benchmarks/results.json. The ratios are the results."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import fairness, flows, ingest, recovery, retention, webhook_cost
from benchmarks.machine import describe

HERE = Path(__file__).resolve().parent
DSN = os.environ.get("SEGFLOW_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def _pg_database() -> tuple[str, str] | None:
    import uuid

    import asyncpg

    try:
        admin = await asyncpg.connect(DSN, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    name = f"segflow_bench_{uuid.uuid4().hex[:10]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await admin.close()
    return DSN.rsplit("/", 1)[0] + f"/{name}", name


async def _drop(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def make_target(full: bool) -> str:
    return "make bench-full" if full else "make bench"


def ingest_rows(runs: int, duration_s: float, full: bool) -> list[dict[str, Any]]:
    """Max rate of each variant (median of `runs`), then latency at half of that rate."""
    variants = list(INGEST_VARIANTS)
    maxima: dict[str, list[float]] = {v: [] for v in variants}
    detail: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    skipped: dict[str, str] = {}
    for _ in range(runs):  # interleaved, so drift on a shared machine hits every variant alike
        for variant in variants:
            if variant in skipped:
                continue
            result = _one(variant, duration_s, rate=0.0)
            if isinstance(result, str):
                skipped[variant] = result
                continue
            maxima[variant].append(result["rps"])
            detail[variant].append(result)
    base = statistics.median(maxima["bare"])
    rows = []
    for variant in variants:
        if variant in skipped:
            rows.append({"benchmark": f"webhook ingest: {variant}", "not_run": skipped[variant]})
            continue
        rps = statistics.median(maxima[variant])
        half = _one(variant, duration_s, rate=rps / 2)
        assert not isinstance(half, str)
        kind, database = INGEST_VARIANTS[variant]
        # segflow against what a user would write (the peer) and against the least any durable
        # receiver does (the floor): how much of the reachable rate segflow reaches.
        versus = {
            f"vs_{other}": rps / statistics.median(maxima[f"{other}-{database}"])
            for other in ("peer", "floor")
            if kind == "segflow" and maxima.get(f"{other}-{database}")
        }
        rows.append(
            {
                "benchmark": "webhook ingest: " + INGEST_LABELS[kind].format(database),
                "unit": "req/s",
                **spread(maxima[variant]),
                "baseline": base,
                "ratio": rps / base,
                **versus,
                "errors": sum(d["errors"] for d in detail[variant]),
                "durable_writes_checked": [d.get("moved") for d in detail[variant]],
                "p50_ms_at_half_rate": half["p50_ms"],
                "p99_ms_at_half_rate": half["p99_ms"],
                "command": f"{make_target(full)}  (benchmarks/ingest.py, {duration_s:.0f} s per run)",
            }
        )
    return rows


INGEST_VARIANTS = {
    "bare": ("bare", "sqlite"),
    "sqlite": ("segflow", "sqlite"),
    "postgres": ("segflow", "postgres"),
    "peer-sqlite": ("peer", "sqlite"),
    "peer-postgres": ("peer", "postgres"),
    "floor-sqlite": ("floor", "sqlite"),
    "floor-postgres": ("floor", "postgres"),
}
INGEST_LABELS = {
    "bare": "bare endpoint (baseline)",
    "segflow": "segflow, {}",
    "peer": "FastAPI + pydantic + SQLAlchemy ORM, commit per request, {} (baseline 2)",
    "floor": "minimal durable group commit, one UPDATE per webhook, {} (the ceiling: benchmarks/floor.py)",
}


def _one(variant: str, duration_s: float, rate: float) -> dict[str, Any] | str:
    kind, database = INGEST_VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
        work = Path(tmp)
        if database == "postgres":
            made = asyncio.run(_pg_database())
            if made is None:
                return f"PostgreSQL not reachable at {DSN}"
            url, name = made
            try:
                return _checked(
                    ingest.measure(kind, url, work, duration_s=duration_s, concurrency=64, generators=2, rate=rate)
                )
            finally:
                asyncio.run(_drop(name))
        url = f"sqlite:///{work / 'bench.db'}"
        return _checked(ingest.measure(kind, url, work, duration_s=duration_s, concurrency=64, generators=2, rate=rate))


def _checked(result: dict[str, Any]) -> dict[str, Any]:
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} non-2xx answers: the figure would measure failures")
    if "moved" in result and result["moved"] != result["sent"]:
        raise RuntimeError(f"{result['sent']} webhooks acknowledged but {result['moved']} jobs moved")
    return result


BASELINE_COMMIT = "517bcca"  # main before the one-store rewrite (issue 14): the store-only baseline
TRANSITIONS = 5000


def transition_rows(runs: int, full: bool) -> list[dict[str, Any]]:
    """Store-only transitions per second, this tree against BASELINE_COMMIT's, interleaved."""
    import subprocess

    root = HERE.parent
    base = Path(tempfile.mkdtemp(prefix="segflow-bench-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", BASELINE_COMMIT, "service", "benchmarks", "tests/data"],
        capture_output=True,
    )
    if archive.returncode != 0:
        return [{"benchmark": "store-only transitions", "not_run": f"git archive {BASELINE_COMMIT} failed"}]
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
    script = str(HERE / "transitions.py")
    rows: list[dict[str, Any]] = []
    command = f"{make_target(full)}  (benchmarks/transitions.py, {TRANSITIONS} webhook transitions, 64 at a time)"
    for database in ("sqlite", "postgres"):
        rates: dict[str, list[float]] = {"before": [], "now": [], "sql": [], "floor": []}
        for _ in range(runs):
            for which, tree in (("before", base), ("now", root), ("sql", root), ("floor", root)):
                with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
                    made = asyncio.run(_pg_database()) if database == "postgres" else (f"sqlite:///{tmp}/t.db", "")
                    if made is None:
                        return [*rows, {"benchmark": "store-only transitions, postgres", "not_run": "no PostgreSQL"}]
                    mode = [which] if which in ("sql", "floor") else []
                    try:
                        out = subprocess.run(
                            [sys.executable, script, made[0], str(TRANSITIONS), *mode],
                            env={**os.environ, "PYTHONPATH": str(tree)},
                            capture_output=True,
                            check=True,
                        ).stdout
                    finally:
                        if database == "postgres":
                            asyncio.run(_drop(made[1]))
                    rates[which].append(json.loads(out)["per_s"])
        before = statistics.median(rates["before"])
        rows.append(
            row(
                f"store-only transitions: before the rewrite ({BASELINE_COMMIT}), {database} (baseline)",
                "transitions/s",
                rates["before"],
                before,
                command,
            )
        )
        ceiling, statements = statistics.median(rates["floor"]), statistics.median(rates["sql"])
        rows.append(
            row(
                f"store-only transitions: segflow's statements alone, no decision, {database} "
                "(benchmarks/transitions.py sql)",
                "transitions/s",
                rates["sql"],
                before,
                command,
            )
        )
        rows.append(
            row(
                f"store-only transitions: minimal group commit, one UPDATE each, {database} "
                "(the ceiling: benchmarks/transitions.py floor)",
                "transitions/s",
                rates["floor"],
                before,
                command,
            )
        )
        rows.append(
            row(
                f"store-only transitions: segflow, {database}",
                "transitions/s",
                rates["now"],
                before,
                command,
                vs_floor=statistics.median(rates["now"]) / ceiling,
                vs_statements_alone=statistics.median(rates["now"]) / statements,
            )
        )
    return rows


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="segflow-bench-"))


def row(name: str, unit: str, values: list[float], baseline: float, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": name,
        "unit": unit,
        **spread(values),
        "baseline": baseline,
        "ratio": statistics.median(values) / baseline,
        "command": command,
        **extra,
    }


def flow_rows(runs: int, full: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    make = make_target(full)
    n = 3000 if full else 1000
    pairs = [flows.fanout(_workdir(), n) for _ in range(runs)]
    bare = statistics.median(b for _, b in pairs)
    rows.append(
        row(
            "fan-out: bare aiohttp loop to the sandbox (baseline)",
            "creates/s",
            [b for _, b in pairs],
            bare,
            f"{make}  (benchmarks/flows.py fanout, {n} creates)",
        )
    )
    rows.append(
        row(
            "fan-out: segflow submitter to the sandbox",
            "creates/s",
            [s for s, _ in pairs],
            bare,
            f"{make}  (benchmarks/flows.py fanout, {n} creates)",
        )
    )
    sizes = [10_000, 100_000, 1_000_000] if full else [10_000, 100_000]
    timings = {size: [flows.reconcile_round(_workdir(), size) for _ in range(runs)] for size in sizes}
    base = statistics.median(t for t, _ in timings[sizes[0]])
    for size in sizes:
        rows.append(
            row(
                f"reconcile round: {size:,} jobs stored, 1,000 overdue",
                "s",
                [t for t, _ in timings[size]],
                base,
                f"{make}  (benchmarks/flows.py reconcile_round; baseline: the 10k round)",
                statements=statistics.median(q for _, q in timings[size]),
            )
        )
    e2e_n = 10_000 if full else 2_000
    e2e, floors = [], []
    for _ in range(runs):  # interleaved: segflow, then the floor
        e2e.append(flows.end_to_end(_workdir(), e2e_n))
        floors.append(flows.end_to_end(_workdir(), e2e_n, floor=True))
    masks = [flows.mask_write_cpu_ms(_workdir()) for _ in range(runs)]
    floor_cpu = statistics.median(r["cpu_ms_per_job"] for r in floors)
    rows.append(
        row(
            f"end to end: the floor, {e2e_n:,} jobs through the sandbox, zero latency "
            "(the least a durable flow does: benchmarks/e2e_floor.py)",
            "jobs/s",
            [r["jobs_per_s"] for r in floors],
            bare,
            f"{make}  (benchmarks/flows.py end_to_end floor=True; baseline: the bare create loop)",
            wall_s=statistics.median(r["wall_s"] for r in floors),
            cpu_ms_per_job=floor_cpu,
        )
    )
    rows.append(
        row(
            f"end to end: {e2e_n:,} jobs through the sandbox, zero latency",
            "jobs/s",
            [r["jobs_per_s"] for r in e2e],
            bare,
            f"{make}  (benchmarks/flows.py end_to_end; baseline: the bare create loop)",
            wall_s=statistics.median(r["wall_s"] for r in e2e),
            cpu_ms_per_job=statistics.median(r["cpu_ms_per_job"] for r in e2e),
            stored_p50_ms=statistics.median(r["stored_p50_ms"] for r in e2e),
            stored_p99_ms=statistics.median(r["stored_p99_ms"] for r in e2e),
            mask_write_cpu_ms=statistics.median(masks),
            floor_cpu_ms_per_job=floor_cpu,
        )
    )
    stored = 1_000_000 if full else 100_000
    idle = [flows.memory(_workdir(), 0, 0) for _ in range(runs)]
    loaded = [flows.memory(_workdir(), stored, 10_000) for _ in range(runs)]
    idle_mb = statistics.median(idle)
    rows.append(
        row(
            "memory: segflow serve, empty database (baseline)",
            "MB peak RSS",
            idle,
            idle_mb,
            f"{make}  (benchmarks/flows.py memory)",
        )
    )
    rows.append(
        row(
            f"memory: segflow serve, {stored:,} jobs stored, 10,000 in flight",
            "MB peak RSS",
            loaded,
            idle_mb,
            f"{make}  (benchmarks/flows.py memory)",
        )
    )
    return rows + fairness_rows(runs, make)


def fairness_rows(runs: int, make: str) -> list[dict[str, Any]]:
    alone = [fairness.small_batch_seconds(_workdir(), behind=0) for _ in range(runs)]
    behind = [fairness.small_batch_seconds(_workdir(), behind=1000) for _ in range(runs)]
    cmd = f"{make}  (benchmarks/fairness.py; max_in_flight 20, tasks take 0.5-1 s)"
    base = statistics.median(alone)
    return [
        row("fairness: tenant B's 10 jobs alone (baseline)", "s", alone, base, cmd),
        row("fairness: tenant B's 10 jobs behind tenant A's 1,000 (target ratio < 2)", "s", behind, base, cmd),
    ]


def write(rows: list[dict[str, Any]], machine: dict[str, Any], profile: str, elapsed: float) -> None:
    measured_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {
        "machine": machine,
        "profile": profile,
        "measured_at": measured_at,
        "elapsed_s": round(elapsed),
        "rows": rows,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    render(results)


def render(results: dict[str, Any]) -> None:
    """RESULTS.md from results.json and ANALYSIS.md (`--render` redoes it after ANALYSIS.md changes)."""
    machine, profile, rows = results["machine"], results["profile"], results["rows"]
    lines = [
        "# segflow benchmarks",
        "",
        f"Profile `{profile}`, {results['measured_at']}, {results['elapsed_s']} s. Machine: "
        f"{machine['cpus']} CPUs, {machine['cpu_model']}, Python {machine['python']}. Load generators run as "
        "separate processes on the same machine; absolute figures drift, the ratios are the results.",
        "",
        "| benchmark | median | min | max | baseline | ratio | p50 / p99 ms at half rate | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "not_run" in r:
            lines.append(f"| {r['benchmark']} | not run: {r['not_run']} | | | | | | |")
            continue
        latency = (
            f"{r['p50_ms_at_half_rate']:.1f} / {r['p99_ms_at_half_rate']:.1f}" if "p50_ms_at_half_rate" in r else ""
        )
        digits = 2 if r["median"] < 10 else 0
        lines.append(
            f"| {r['benchmark']} | {r['median']:.{digits}f} {r['unit']} | {r['min']:.{digits}f} | "
            f"{r['max']:.{digits}f} | {r['baseline']:.{digits}f} | {r['ratio']:.2f} | {latency} | `{r['command']}` |"
        )
        notes = {
            k: r[k]
            for k in (
                "vs_peer",
                "vs_floor",
                "vs_statements_alone",
                "statements",
                "wall_s",
                "cpu_ms_per_job",
                "floor_cpu_ms_per_job",
                "mask_write_cpu_ms",
                "stored_p50_ms",
                "stored_p99_ms",
                "jobs_pruned_during_run",
                *recovery.NOTES,
            )
            if k in r
        }
        if notes:
            shown = ", ".join(f"{k} {v:.{2 if abs(v) < 10 else 1}f}" for k, v in notes.items())
            lines.append(f"| | {shown} | | | | | | |")
    lines += [
        "",
        "Each segflow request is a distinct job's completion webhook: secret verified (HMAC-SHA256, constant "
        "time), body decoded strictly, the job moved submitted → fetching by a compare-and-set with its event-log "
        "row, committed (SQLite `synchronous=FULL`) before the 200. After every run the store is checked: the "
        "number of jobs moved equals the number of 200s, and any non-2xx answer fails the benchmark.",
    ]
    lines += ["", (HERE / "ANALYSIS.md").read_text().strip()]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--render", action="store_true", help="rewrite RESULTS.md from results.json, measuring nothing")
    args = parser.parse_args()
    if args.render:
        render(json.loads((HERE / "results.json").read_text()))
        return
    profile = "full" if args.full else "quick"
    from service.logs import configure_logging

    configure_logging("console", "error")  # in-process rounds (the reconciler's) stay quiet
    runs, duration = (5, 8.0) if args.full else (3, 4.0)
    started = time.time()
    rows = ingest_rows(runs, duration, args.full) + transition_rows(runs, args.full)
    rows += flow_rows(3 if not args.full else 5, args.full)
    rows += webhook_cost.rows(args.full)
    rows += retention.rows(runs, duration, args.full)
    rows += recovery.rows(1 if not args.full else 3, make_target(args.full), _workdir, row)
    write(rows, describe(), profile, time.time() - started)
    print((HERE / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()
