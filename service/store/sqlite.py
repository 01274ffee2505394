"""SQLite store (WAL): the embedded default for one process.

Writes are group-committed: callers queue small operations, one writer thread runs everything queued
in one transaction (each operation inside its own savepoint, so one failing operation does not undo
the others) and resolves every caller's future after COMMIT returned. One thread hop per batch, one
fsync per batch, and nobody is answered before their write is durable. Reads use their own
connection and thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from service.states import State
from service.store import rows
from service.store.base import (
    MUTABLE_COLUMNS,
    ArtifactRow,
    BatchRow,
    BatchSummary,
    Decision,
    EventRow,
    IdempotencyConflict,
    JobInput,
    JobRow,
    Outcome,
    StoreError,
    TaskRow,
)
from service.store.migrations import migration_files
from service.store.sqlite_callbacks import SqliteCallbacks, write_outbox
from service.store.sqlite_retention import SqliteRetention
from service.store.sqlite_sql import (
    AGED_JOBS,
    BATCH_COUNTS,
    BATCH_JOBS,
    BATCH_JOBS_IN_STATE,
    BATCHES_COUNTS,
    CLAIM_DUE,
    CLAIM_FETCHING,
    CLAIM_QUEUED,
    COUNT_FETCHING,
    COUNT_IN_FLIGHT,
    FLOW_COUNTS,
    INSERT_ARTIFACT,
    INSERT_BATCH,
    INSERT_EVENT,
    INSERT_JOB,
    INSERT_KEY,
    JOB_COLS,
    JOB_COUNTS,
    SELECT_ARTIFACTS,
    SELECT_BATCH,
    SELECT_BATCH_BY_KEY,
    SELECT_EVENTS,
    SELECT_JOB,
    SELECT_JOB_TASKS,
    SELECT_KEY,
    SELECT_TASK,
    STALE_LEASES,
    TENANT_BATCHES,
    UPSERT_TASK,
)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class SqliteStore(SqliteCallbacks, SqliteRetention):
    """The `Store` on one SQLite file."""

    def __init__(self, path: str | Path, *, group_commit_max: int = 256, synchronous: str = "FULL") -> None:
        self._path = Path(path)
        self._max = group_commit_max
        self._synchronous = synchronous
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._wexec: ThreadPoolExecutor | None = None
        self._rexec: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._closed = False
        self._update_sql: dict[tuple[str, ...], str] = {}

    # lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._wexec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._rexec = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn = await loop.run_in_executor(self._wexec, self._connect)
        await loop.run_in_executor(self._wexec, self._migrate)
        self._rconn = await loop.run_in_executor(self._rexec, self._connect)
        self._writer = asyncio.create_task(self._writer_loop(), name="sqlite-group-commit")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer:
            await self._writer
        loop = asyncio.get_running_loop()
        for conn, ex in ((self._wconn, self._wexec), (self._rconn, self._rexec)):
            if conn and ex:
                await loop.run_in_executor(ex, conn.close)
                ex.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def _migrate(self) -> None:
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in migration_files("sqlite"):
            if version in done:
                continue
            # One script, one transaction: a migration applies whole or not at all.
            try:
                record = f"INSERT INTO schema_migrations VALUES ({version}, {time.time()})"
                conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n;{record};\nCOMMIT;")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _conn(self) -> sqlite3.Connection:
        assert self._wconn is not None, "store not open"
        return self._wconn

    # the group-commit writer ---------------------------------------------------------------

    async def _write(self, op: Op) -> Any:
        if self._closed or self._writer is None:
            raise StoreError("store is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        self._wake.set()
        return await fut

    async def _writer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max]
                del self._pending[: self._max]
                try:
                    results = await loop.run_in_executor(self._wexec, self._run_batch, [op for op, _ in batch])
                except sqlite3.Error as exc:
                    failure = StoreError(f"commit failed: {exc}")
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(failure)
                    continue
                for (_, fut), (ok, value) in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)
            if self._closed and not self._pending:
                return

    def _run_batch(self, ops: list[Op]) -> list[tuple[bool, Any]]:
        """One transaction: other writes first (each in a savepoint), then every transition of the
        batch as one group, decided in memory and written with `executemany`."""
        conn = self._conn()
        out: list[tuple[bool, Any]] = [(False, None)] * len(ops)
        transitions = [(i, op) for i, op in enumerate(ops) if isinstance(op, _Transition)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for i, op in enumerate(ops):
                if not isinstance(op, _Transition):
                    out[i] = _in_savepoint(conn, op)
            if transitions:
                for (i, _), result in zip(
                    transitions, _transition_group(conn, [t for _, t in transitions]), strict=True
                ):
                    out[i] = result
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed or self._rconn is None:
            raise StoreError("store is closed")
        conn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(self._rexec, fn, conn)

    # API keys ------------------------------------------------------------------------------

    async def add_api_key(self, tenant: str, key_hash: str, label: str) -> None:
        await self._write(lambda c: c.execute(INSERT_KEY, (key_hash, tenant, label, time.time())))

    async def tenant_for_key(self, key_hash: str) -> str | None:
        row = await self._read(lambda c: c.execute(SELECT_KEY, (key_hash,)).fetchone())
        return str(row[0]) if row else None

    # batches -------------------------------------------------------------------------------

    async def create_batch(
        self,
        tenant: str,
        items: Sequence[JobInput],
        *,
        callback_url: str | None,
        idempotency_key: str | None,
        request_hash: str,
        now: float,
    ) -> tuple[BatchRow, list[JobRow], bool]:
        def op(c: sqlite3.Connection) -> tuple[BatchRow, list[JobRow], bool]:
            if idempotency_key is not None:
                found = c.execute(SELECT_BATCH_BY_KEY, (tenant, idempotency_key)).fetchone()
                if found:
                    batch = rows.batch(found)
                    if batch.request_hash != request_hash:
                        raise IdempotencyConflict(idempotency_key)
                    jobs = [rows.job(r) for r in c.execute(BATCH_JOBS, (batch.id, -1, batch.total))]
                    return batch, jobs, False
            batch = BatchRow(str(uuid.uuid4()), tenant, callback_url, idempotency_key, request_hash, len(items), now)
            c.execute(INSERT_BATCH, rows.batch_params(batch))
            params = [rows.new_job_params(str(uuid.uuid4()), batch, seq, item, now) for seq, item in enumerate(items)]
            c.executemany(INSERT_JOB, params)
            c.executemany(INSERT_EVENT, [(p[0], now, "accepted", "", "queued", "api", None) for p in params])
            jobs = [rows.job(r) for r in c.execute(BATCH_JOBS, (batch.id, -1, len(items)))]
            return batch, jobs, True

        result: tuple[BatchRow, list[JobRow], bool] = await self._write(op)
        return result

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        row = await self._read(lambda c: c.execute(SELECT_BATCH, (batch_id,)).fetchone())
        return rows.batch(row) if row else None

    async def batch_summary(self, batch_id: str) -> BatchSummary | None:
        def fn(c: sqlite3.Connection) -> BatchSummary | None:
            row = c.execute(SELECT_BATCH, (batch_id,)).fetchone()
            if not row:
                return None
            counts = c.execute(BATCH_COUNTS, (batch_id,)).fetchall()
            return BatchSummary(rows.batch(row), {s: n for s, n, _ in counts}, round(sum(p for *_, p in counts), 6))

        return await self._read(fn)

    async def list_batch_jobs(self, batch_id: str, *, state: State | None, after_seq: int, limit: int) -> list[JobRow]:
        if state is None:
            return await self._read(
                lambda c: [rows.job(r) for r in c.execute(BATCH_JOBS, (batch_id, after_seq, limit))]
            )
        return await self._read(
            lambda c: [rows.job(r) for r in c.execute(BATCH_JOBS_IN_STATE, (batch_id, state.value, after_seq, limit))]
        )

    async def list_batches(self, tenant: str, *, before: tuple[float, str] | None, limit: int) -> list[BatchSummary]:
        created_before, id_before = before or (math.inf, "")

        def fn(c: sqlite3.Connection) -> list[BatchSummary]:
            found = [rows.batch(r) for r in c.execute(TENANT_BATCHES, (tenant, created_before, id_before, limit))]
            if not found:
                return []
            counts = c.execute(BATCHES_COUNTS.format(marks=", ".join("?" * len(found))), [b.id for b in found])
            return rows.batch_summaries(found, counts)

        return await self._read(fn)

    # jobs ----------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self._read(lambda c: c.execute(SELECT_JOB, (job_id,)).fetchone())
        return rows.job(row) if row else None

    async def job_tasks(self, job_id: str) -> list[TaskRow]:
        return await self._read(lambda c: [rows.task(r) for r in c.execute(SELECT_JOB_TASKS, (job_id,))])

    async def job_events(self, job_id: str) -> list[EventRow]:
        return await self._read(lambda c: [rows.event(r) for r in c.execute(SELECT_EVENTS, (job_id,))])

    async def job_artifacts(self, job_id: str) -> list[ArtifactRow]:
        return await self._read(lambda c: [rows.artifact(r) for r in c.execute(SELECT_ARTIFACTS, (job_id,))])

    async def transition(self, job_id: str, decide: Decision, *, task_id: str | None = None) -> Outcome:
        result: Outcome = await self._write(_Transition(job_id, decide, task_id, self._update))
        return result

    def _update(self, columns: tuple[str, ...]) -> str:
        sql = self._update_sql.get(columns)
        if sql is None:
            sets = "".join(f", {c} = ?" for c in columns)  # names come from MUTABLE_COLUMNS only
            sql = f"UPDATE jobs SET state = ?, updated_at = ?{sets} WHERE id = ? AND state = ?"
            self._update_sql[columns] = sql
        return sql

    # work claims ---------------------------------------------------------------------------

    async def claim_queued(
        self, owner: str, *, now: float, limit: int, max_in_flight: int, lease_s: float, max_fetch_backlog: int = 0
    ) -> list[JobRow]:
        def op(c: sqlite3.Connection) -> list[JobRow]:
            room = min(limit, max_in_flight - c.execute(COUNT_IN_FLIGHT).fetchone()[0])
            if room > 0 and max_fetch_backlog:
                room = min(room, max_fetch_backlog - c.execute(COUNT_FETCHING).fetchone()[0])
            if room <= 0:
                return []
            claimed = [rows.job(r) for r in c.execute(CLAIM_QUEUED, (owner, now + lease_s, now, now, room))]
            c.executemany(
                INSERT_EVENT,
                [
                    (
                        j.id,
                        now,
                        "claim",
                        "queued",
                        "submitting",
                        "submitter",
                        orjson.dumps({"attempt": j.attempt}).decode(),
                    )
                    for j in claimed
                ],
            )
            return claimed

        result: list[JobRow] = await self._write(op)
        return result

    async def claim_fetching(self, owner: str, *, now: float, limit: int, lease_s: float) -> list[JobRow]:
        result: list[JobRow] = await self._write(
            lambda c: [rows.job(r) for r in c.execute(CLAIM_FETCHING, (owner, now + lease_s, now, now, limit))]
        )
        return result

    async def claim_due(self, *, now: float, limit: int, hold_s: float) -> list[JobRow]:
        result: list[JobRow] = await self._write(
            lambda c: [rows.job(r) for r in c.execute(CLAIM_DUE, (now + hold_s, now, limit))]
        )
        return result

    async def stale_leases(self, *, now: float, limit: int) -> list[JobRow]:
        return await self._read(lambda c: [rows.job(r) for r in c.execute(STALE_LEASES, (now, limit))])

    async def aged_jobs(self, *, cutoff: float, limit: int) -> list[JobRow]:
        return await self._read(lambda c: [rows.job(r) for r in c.execute(AGED_JOBS, (cutoff, limit))])

    # figures -------------------------------------------------------------------------------

    async def job_counts(self) -> Mapping[str, int]:
        return await self._read(lambda c: {s: n for s, n in c.execute(JOB_COUNTS)})

    async def flow_counts(self) -> Mapping[str, int]:
        row = await self._read(lambda c: c.execute(FLOW_COUNTS).fetchone())
        return rows.flow_counts(row)


_MUTABLE = tuple(c for c in rows.JOB_COLUMNS if c in MUTABLE_COLUMNS)
UPDATE_FULL = (
    "UPDATE jobs SET state = ?, updated_at = ?, "
    + ", ".join(f"{c} = ?" for c in _MUTABLE)
    + " WHERE id = ? AND state = ?"
)


class _Transition:
    """A queued `Store.transition`; alone (the fallback) it reads, decides and writes itself."""

    __slots__ = ("decide", "job_id", "task_id", "update_sql")

    def __init__(self, job_id: str, decide: Decision, task_id: str | None, update_sql: Any) -> None:
        self.job_id, self.decide, self.task_id, self.update_sql = job_id, decide, task_id, update_sql

    def __call__(self, c: sqlite3.Connection) -> Outcome:
        row = c.execute(SELECT_JOB, (self.job_id,)).fetchone()
        job = rows.job(row) if row else None
        task_row = c.execute(SELECT_TASK, (self.task_id,)).fetchone() if self.task_id else None
        change = self.decide(job, rows.task(task_row) if task_row else None)
        if job is None or change is None:
            return Outcome(job, job, False)
        plan = rows.plan(job, change, time.time())
        if plan is None:
            return Outcome(job, job, False)
        if c.execute(self.update_sql(plan.columns), plan.update_params).rowcount != 1:
            return Outcome(job, job, False)
        if plan.task_params:
            c.execute(UPSERT_TASK, plan.task_params)
        if plan.artifact_params:
            c.executemany(INSERT_ARTIFACT, plan.artifact_params)
        if plan.event_params:
            c.execute(INSERT_EVENT, plan.event_params)
        if plan.outbox is not None:
            write_outbox(c, plan.outbox, plan.after.updated_at)
        return Outcome(job, plan.after, True)


def _in_savepoint(conn: sqlite3.Connection, op: Op) -> tuple[bool, Any]:
    conn.execute("SAVEPOINT op")
    try:
        value = op(conn)
    except Exception as exc:  # noqa: BLE001 - the error belongs to that op's caller
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return (False, exc)
    conn.execute("RELEASE op")
    return (True, value)


def _transition_group(conn: sqlite3.Connection, group: list[_Transition]) -> list[tuple[bool, Any]]:
    """Every transition of a batch in a few statements; should the group's SQL fail or find a row
    changed under it, each transition runs again on its own, in its own savepoint."""
    now = time.time()
    conn.execute("SAVEPOINT grp")
    try:
        ids = list(dict.fromkeys(t.job_id for t in group))
        marks = ", ".join("?" * len(ids))
        jobs = {r[0]: rows.job(r) for r in conn.execute(f"SELECT {JOB_COLS} FROM jobs WHERE id IN ({marks})", ids)}
        task_ids = list(dict.fromkeys(t.task_id for t in group if t.task_id))
        tasks = {}
        if task_ids:
            tmarks = ", ".join("?" * len(task_ids))
            found = conn.execute(SELECT_TASK.replace("task_id = ?", f"task_id IN ({tmarks})"), task_ids)
            tasks = {r[0]: rows.task(r) for r in found}
        gp = rows.plan_group([(t.job_id, t.decide, t.task_id) for t in group], jobs, tasks, now)
        if gp.changed and conn.executemany(UPDATE_FULL, gp.job_rows(_MUTABLE)).rowcount != len(gp.changed):
            raise sqlite3.IntegrityError("a job changed under the group")
        if gp.task_params:
            conn.executemany(UPSERT_TASK, gp.task_params)
        if gp.event_params:
            conn.executemany(INSERT_EVENT, gp.event_params)
        if gp.artifact_params:
            conn.executemany(INSERT_ARTIFACT, gp.artifact_params)
        for event in gp.outbox:
            write_outbox(conn, event, now)
    except sqlite3.Error:
        conn.execute("ROLLBACK TO grp")
        conn.execute("RELEASE grp")
        return [_in_savepoint(conn, t) for t in group]
    conn.execute("RELEASE grp")
    return gp.results
