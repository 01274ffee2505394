"""The chaos soak: thousands of jobs through `segflow serve` replicas on one PostgreSQL database
while every sandbox fault is on, replicas are SIGKILLed (or stopped) and restarted at random, and
the database's connections are terminated under them. Then `service.invariants` checks the store,
the artifact folder and the sandbox's record against segflow's promises.

    python -m tests.chaos --profile short|long [--seed N] [--json FILE]

Exits 1 on any violation. Every random choice (the runner's and the sandbox's) follows `--seed`;
the timing of kills against work in flight does not, which is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from service.artifacts_local import LocalArtifactStore
from service.invariants import Report, check_outbox, check_run
from service.store import open_store_for
from tests.fixtures.database import drop_postgres_database, fresh_postgres_database
from tests.fixtures.processes import Processes, free_port

TENANT = "chaos"
API_KEY = "chaos-tenant-key-0123456789abcdef"
WEBHOOK_KEY = "chaos-webhook-master-key-0123456789"
UPSTREAM_KEY = "chaos-upstream-key"
SAMPLES = ("street.jpg", "portrait.jpg", "shapes.png")

# Every fault the sandbox knows, at once. create_hold_s outlasts segflow's create timeout, so a
# held create is an ambiguous one that the adoption window has to settle.
FAULTS: dict[str, float] = {
    "webhook_drop": 0.1,
    "webhook_duplicate": 0.2,
    "webhook_delay": 0.1,
    "webhook_delay_s": 2.0,
    "webhook_reorder": 0.1,
    "create_5xx": 0.05,
    "create_lost": 0.05,
    "create_hold": 0.02,
    "create_hold_s": 4.0,
    "burst_429": 0.01,
    "burst_429_length": 5,
    "burst_429_retry_after_s": 0.5,
    "task_fail": 0.02,
    "task_fail_retryable": 0.05,
    "get_5xx": 0.1,
    "output_expire_early": 0.02,
}


@dataclass(frozen=True)
class Profile:
    name: str
    jobs: int
    replicas: int
    batch_size: int
    kill_every_s: tuple[float, float]  # pause between two replica kills
    db_kill_every_s: tuple[float, float]  # pause between two rounds of terminated connections
    down_for_s: tuple[float, float]  # how long a killed replica stays down
    drain_timeout_s: float  # from the first submission to every job final
    latency_s: tuple[float, float]  # the sandbox's time from create to final state


PROFILES = {
    "short": Profile("short", 600, 2, 50, (1.0, 2.5), (1.5, 4.0), (0.2, 1.5), 400.0, (0.2, 1.5)),
    "long": Profile("long", 5000, 3, 250, (3.0, 10.0), (2.0, 6.0), (0.2, 3.0), 1800.0, (0.2, 3.0)),
}


@dataclass
class ChaosReport:
    profile: str
    seed: int
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    replica_kills: int = 0
    replica_stops: int = 0
    crashes: int = 0  # replicas that exited without being killed
    restart_failures: int = 0  # restarts that did not come up (a killed connection mid-start)
    db_connections_killed: int = 0
    submit_retries: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    webhooks: dict[str, int] = field(default_factory=dict)
    acked_completions: int = 0
    duplicate_paid_tasks: int = 0
    resends_after_adoption_window: int = 0
    resends_after_history: int = 0
    adopted_from_history: int = 0
    claims_lapsed: int = 0
    masks_checked: int = 0
    chaos_s: float = 0.0
    drain_s: float = 0.0  # from the end of chaos to every job final
    total_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def take(self, run: Report) -> None:
        self.states = run.states
        self.masks_checked = run.masks_checked
        self.acked_completions = run.acked_completions
        self.duplicate_paid_tasks = run.duplicate_paid_tasks
        self.resends_after_adoption_window = run.resends_after_adoption_window
        self.resends_after_history = run.resends_after_history
        self.adopted_from_history = run.adopted_from_history
        self.claims_lapsed = run.claims_lapsed
        self.violations.extend(run.violations)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "violations"}
        out["states"] = dict(self.states)
        out["ok"] = self.ok
        out["violations"] = self.violations[:50]
        out["violation_count"] = len(self.violations)
        return out

    def render(self) -> str:
        lines = [
            f"chaos {self.profile} (seed {self.seed}): {'OK' if self.ok else 'VIOLATIONS'}",
            f"  jobs {self.jobs}: " + ", ".join(f"{s} {n}" for s, n in sorted(self.states.items())),
            f"  injected upstream faults: {sum(self.faults_injected.values())} "
            + ", ".join(f"{k} {v}" for k, v in self.faults_injected.items() if v),
            f"  replicas SIGKILLed {self.replica_kills}, stopped {self.replica_stops}, crashed {self.crashes}, "
            f"restarts that failed to come up {self.restart_failures}",
            f"  database connections terminated: {self.db_connections_killed}",
            f"  batch submissions retried: {self.submit_retries}",
            f"  webhooks acknowledged with the outcome durable first: {self.acked_completions}",
            f"  masks checked against the sandbox's sha256: {self.masks_checked}",
            f"  duplicate paid tasks {self.duplicate_paid_tasks} "
            f"(allowed: re-sends after a passed adoption window {self.resends_after_adoption_window})",
            f"  recovery: adopted from the history {self.adopted_from_history}, re-sent after the history "
            f"showed no task {self.resends_after_history}, claims queued again unsent {self.claims_lapsed}",
            f"  time: chaos {self.chaos_s:.1f} s, drain after chaos {self.drain_s:.1f} s, total {self.total_s:.1f} s",
        ]
        lines += [f"  VIOLATION {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  … and {len(self.violations) - 50} more")
        return "\n".join(lines)


@dataclass
class Replica:
    n: int
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    down: bool = False  # killed on purpose, restart pending

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def replica_env(n: int, port: int, database_url: str, sandbox_url: str, artifacts: Path) -> dict[str, str]:
    return {
        "SEGFLOW_INSTANCE_ID": f"replica-{n}",
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SEGFLOW_DATABASE_URL": database_url,
        "SEGFLOW_ARTIFACT_DIR": str(artifacts),
        "SEGFLOW_UPSTREAM_URL": sandbox_url,
        "SEGFLOW_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_UPSTREAM_TIMEOUT_S": "2",
        "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
        "SEGFLOW_WEBHOOK_KEYS": WEBHOOK_KEY,
        "SEGFLOW_API_KEYS": f"{TENANT}:{API_KEY}",
        "SEGFLOW_MAX_ATTEMPTS": "4",
        "SEGFLOW_POLL_AFTER_S": "2",
        "SEGFLOW_POLL_BACKOFF_MAX_S": "4",
        "SEGFLOW_ADOPTION_WINDOW_S": "6",
        "SEGFLOW_RECONCILE_INTERVAL_S": "0.5",
        "SEGFLOW_SUBMIT_LEASE_S": "4",
        "SEGFLOW_SUBMIT_BACKOFF_BASE_S": "0.5",
        "SEGFLOW_SUBMIT_BACKOFF_MAX_S": "4",
        "SEGFLOW_FETCH_LEASE_S": "6",
        "SEGFLOW_MAX_IN_FLIGHT": "120",
        "SEGFLOW_CREATES_PER_S": "60",
        "SEGFLOW_LOG_FORMAT": "json",
        "SEGFLOW_LOG_LEVEL": "warning",
    }


def sandbox_args(port: int, seed: int, latency: tuple[float, float]) -> list[str]:
    args = ["sandbox", "--port", str(port), "--seed", str(seed), "--api-key", UPSTREAM_KEY]
    args += ["--latency-min", str(latency[0]), "--latency-max", str(latency[1])]
    args += ["--webhook-retry-interval", "1", "--webhook-timeout", "3", "--log-level", "warning"]
    for name, value in FAULTS.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


class Soak:
    """One run: the processes, the chaos loops, and what they did."""

    def __init__(self, profile: Profile, seed: int, workdir: Path, database_url: str, admin_dsn: str) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.workdir = workdir
        self.database_url = database_url
        self.database = database_url.rsplit("/", 1)[-1]
        self.admin_dsn = admin_dsn
        self.report = ChaosReport(profile.name, seed, jobs=profile.jobs)
        self.procs = Processes(workdir)
        self.artifacts = workdir / "artifacts"
        self.sandbox_url = ""
        self.replicas: list[Replica] = []
        self.batches: list[str] = []
        self.job_ids: list[str] = []

    # processes ---------------------------------------------------------------------------------

    async def start_sandbox(self, seed: int) -> None:
        port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{port}"
        args = sandbox_args(port, seed, self.profile.latency_s)
        await asyncio.to_thread(self.procs.start, "sandbox", args, {}, f"{self.sandbox_url}/samples")

    async def start_replica(self, r: Replica) -> None:
        """Start (or restart) a replica; a start that dies on a terminated connection is tried again."""
        for _ in range(10):
            try:
                r.proc = await asyncio.to_thread(
                    self.procs.start, f"replica-{r.n}", ["serve"], r.env, f"{r.url}/healthz"
                )
                r.down = False
                return
            except AssertionError:
                self.report.restart_failures += 1
        raise RuntimeError(f"replica-{r.n} did not come up in 10 tries; see {self.workdir}/replica-{r.n}.log")

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if not r.down and r.proc is not None and r.proc.poll() is None]

    async def watch_crashes(self) -> None:
        """A replica that exits on its own is a finding (counted, and restarted)."""
        for r in self.replicas:
            if not r.down and r.proc is not None and r.proc.poll() is not None:
                self.report.crashes += 1
                self.report.violations.append(f"replica-{r.n} exited by itself with code {r.proc.returncode}")
                await self.start_replica(r)

    # chaos -------------------------------------------------------------------------------------

    async def kill_replicas(self, stop: asyncio.Event) -> None:
        while not await _wait(stop, self.rng.uniform(*self.profile.kill_every_s)):
            await self.watch_crashes()
            victims = self.live()
            if len(victims) < 2:
                continue  # keep one replica up to take the API calls
            r = self.rng.choice(victims)
            graceful = self.rng.random() < 0.2
            r.down = True
            assert r.proc is not None
            await asyncio.to_thread(self.procs.kill, r.proc, signal.SIGTERM if graceful else signal.SIGKILL)
            if graceful:
                self.report.replica_stops += 1
            else:
                self.report.replica_kills += 1
            await asyncio.sleep(self.rng.uniform(*self.profile.down_for_s))
            await self.start_replica(r)

    async def kill_connections(self, stop: asyncio.Event) -> None:
        while not await _wait(stop, self.rng.uniform(*self.profile.db_kill_every_s)):
            conn = await asyncpg.connect(self.admin_dsn, timeout=10)
            try:
                killed = await conn.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.database,
                )
            finally:
                await conn.close()
            self.report.db_connections_killed += sum(1 for row in killed if row[0])

    # the client's side ---------------------------------------------------------------------------

    async def submit_all(self, http: aiohttp.ClientSession) -> None:
        """Every batch, sent to a random live replica; a failed call is sent again with the same
        Idempotency-Key (to another replica, perhaps), as a careful client would."""
        images = [f"{self.sandbox_url}/samples/{name}" for name in SAMPLES]
        for start in range(0, self.profile.jobs, self.profile.batch_size):
            count = min(self.profile.batch_size, self.profile.jobs - start)
            items = [{"image": images[(start + i) % 3], "prompt": f"object {start + i}"} for i in range(count)]
            accepted = await self._call(http, "POST", "/v1/batches", {"items": items}, str(uuid.uuid4()))
            self.batches.append(accepted["batch_id"])
            self.job_ids.extend(j["job_id"] for j in accepted["jobs"])

    async def all_final(self, http: aiohttp.ClientSession) -> bool:
        for batch_id in self.batches:
            summary = await self._call(http, "GET", f"/v1/batches/{batch_id}")
            if summary["done"] < summary["total"]:
                return False
        return len(self.job_ids) == self.profile.jobs

    async def _call(self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None, key: str = "") -> Any:
        headers = {"authorization": f"Bearer {API_KEY}"}
        if key:
            headers["idempotency-key"] = key
        for tries in range(200):
            live = self.live()
            if live:
                try:
                    async with http.request(
                        method, self.rng.choice(live).url + path, json=body, headers=headers
                    ) as resp:
                        if resp.status in (200, 202):
                            return await resp.json()
                        if resp.status < 500:
                            raise RuntimeError(f"{method} {path}: {resp.status} {await resp.text()}")
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if method == "POST":
                self.report.submit_retries += 1
            await asyncio.sleep(min(1.0, 0.05 * (tries + 1)))
        raise RuntimeError(f"{method} {path}: no replica answered")

    # the run -----------------------------------------------------------------------------------

    async def run(self, seed: int) -> ChaosReport:
        started = time.monotonic()
        await self.start_sandbox(seed)
        for n in range(self.profile.replicas):
            port = free_port()
            env = replica_env(n, port, self.database_url, self.sandbox_url, self.artifacts)
            self.replicas.append(Replica(n, port, env))
        for r in self.replicas:
            await self.start_replica(r)
        stop = asyncio.Event()
        deadline = started + self.profile.drain_timeout_s
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            chaos = [
                asyncio.create_task(self.kill_replicas(stop)),
                asyncio.create_task(self.kill_connections(stop)),
            ]
            try:
                await self.submit_all(http)
                # Chaos goes on while most of the work is done, then stops so the drain is measured.
                while time.monotonic() < deadline:
                    if await self._mostly_done(http):
                        break
                    await asyncio.sleep(0.5)
            finally:
                stop.set()
                await asyncio.gather(*chaos)
            chaos_ended = time.monotonic()
            self.report.chaos_s = chaos_ended - started
            await self.watch_crashes()
            while not await self.all_final(http):
                if time.monotonic() > deadline:
                    self.report.violations.append(f"not drained within {self.profile.drain_timeout_s:.0f} s")
                    break
                await asyncio.sleep(0.5)
            self.report.drain_s = time.monotonic() - chaos_ended
            self.report.total_s = time.monotonic() - started
            async with http.get(f"{self.sandbox_url}/_sandbox/tasks") as resp:
                tasks = await resp.json()
            async with http.get(f"{self.sandbox_url}/_sandbox/stats") as resp:
                stats = await resp.json()
        self.report.faults_injected = stats["faults"]
        self.report.webhooks = stats["webhooks"]
        await self.check(tasks)
        return self.report

    async def _mostly_done(self, http: aiohttp.ClientSession) -> bool:
        done = 0
        for batch_id in self.batches:
            done += (await self._call(http, "GET", f"/v1/batches/{batch_id}"))["done"]
        return done >= 0.9 * self.profile.jobs

    async def check(self, tasks: list[dict[str, Any]]) -> None:
        self.procs.stop_all()  # the store is checked at rest
        store = open_store_for(self.database_url)
        await store.open()
        try:
            run = await check_run(store, LocalArtifactStore(self.artifacts), self.job_ids, tasks)
            await check_outbox(store, TENANT, self.job_ids, run)
        finally:
            await store.close()
        self.report.take(run)
        if len(self.job_ids) != self.profile.jobs:
            self.report.violations.append(f"{len(self.job_ids)} jobs accepted, {self.profile.jobs} submitted")


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    url, name = await fresh_postgres_database(admin_dsn)
    try:
        yield url
    finally:
        await drop_postgres_database(name, admin_dsn)


async def soak(profile: Profile, *, seed: int, workdir: Path, admin_dsn: str) -> ChaosReport:
    async with scratch_database(admin_dsn) as url:
        run = Soak(profile, seed, workdir, url, admin_dsn)
        try:
            return await run.run(seed)
        finally:
            run.procs.stop_all()
