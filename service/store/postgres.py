"""PostgreSQL store (asyncpg): any number of replicas on one database.

Transitions are group-committed on one connection per group with few round trips whatever the
group's size: the group's jobs are read once `FOR UPDATE`, every decide function runs in order
against the rows as the group has changed them so far, then each changed job is written once
(a compare-and-set on the state read under the lock), and tasks, events and artifacts are
inserted with pipelined `executemany`. Should the group's SQL fail, each transition is retried on
its own, so one bad write cannot sink the others. Work is claimed with `FOR UPDATE SKIP LOCKED`;
NOTIFY on channel `segflow` wakes workers on every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
import asyncpg.pool
import orjson
import structlog

from service.states import State
from service.store import rows
from service.store.base import (
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
from service.store.pg_callbacks import PostgresCallbacks, write_outbox
from service.store.pg_retention import PgRetention
from service.store.postgres_sql import (
    AGED_JOBS,
    BATCH_COUNTS,
    BATCH_JOBS,
    BATCH_JOBS_IN_STATE,
    BATCHES_COUNTS,
    CLAIM_DUE,
    CLAIM_FETCHING,
    CLAIM_LOCK,
    CLAIM_QUEUED,
    COUNT_FETCHING,
    COUNT_IN_FLIGHT,
    CREATE_MIGRATIONS,
    FLOW_COUNTS,
    INSERT_ARTIFACT,
    INSERT_BATCH,
    INSERT_EVENT,
    INSERT_JOB,
    INSERT_KEY,
    JOB_COUNTS,
    LOCK_JOBS,
    MIGRATION_LOCK,
    MIGRATION_UNLOCK,
    MUTABLE,
    NOTIFY,
    SELECT_ARTIFACTS,
    SELECT_BATCH,
    SELECT_BATCH_BY_KEY,
    SELECT_EVENTS,
    SELECT_JOB,
    SELECT_JOB_TASKS,
    SELECT_KEY,
    SELECT_TASKS,
    STALE_LEASES,
    TENANT_BATCHES,
    UPDATE_JOB,
    UPSERT_TASK,
)
from service.wakeup import Topic

T = TypeVar("T")
# Pooled connections are proxies; the listener holds a plain connection.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
log = structlog.get_logger("segflow.store.postgres")

CHANNEL = "segflow"
ACQUIRE_TIMEOUT_S = 5.0

# What losing the server looks like to asyncpg.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
    TimeoutError,
)

Pending = tuple[str, Decision, str | None, "asyncio.Future[Outcome]"]

# SQLSTATE classes meaning "the database is not there right now" rather than "this SQL is wrong":
# connection exceptions, insufficient resources, operator intervention, database not accepting
# connections.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "55000")


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, (*_CONNECTION_ERRORS, asyncpg.exceptions.InternalClientError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state.startswith(_UNAVAILABLE_SQLSTATES)


def _wakes(state: State) -> Topic | None:
    if state is State.QUEUED:
        return Topic.SUBMIT
    if state is State.FETCHING:
        return Topic.FETCH
    if state.is_terminal:
        return Topic.DELIVER
    return None


class PostgresStore(PostgresCallbacks, PgRetention):
    """The `Store` on PostgreSQL."""

    def __init__(self, url: str, *, group_commit_max: int = 256, pool_size: int = 10) -> None:
        self._url = url
        self._max = group_commit_max
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    # lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)
            async with self._pool.acquire() as conn:
                await self._migrate(conn)
        except Exception as exc:
            if _unavailable(exc):
                raise StoreError(f"cannot reach PostgreSQL: {type(exc).__name__}") from None
            raise
        self._writer = asyncio.create_task(self._writer_loop(), name="postgres-group-commit")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer:
            await self._writer
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pool:
            await self._pool.close()

    async def ping(self) -> None:
        await self._read(lambda c: c.fetchval("SELECT 1"))

    async def _migrate(self, conn: Conn) -> None:
        await conn.execute(MIGRATION_LOCK)  # replicas starting together migrate one at a time
        try:
            await conn.execute(CREATE_MIGRATIONS)
            done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, sql in migration_files("postgres"):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, time.time())
        finally:
            await conn.execute(MIGRATION_UNLOCK)

    async def listen(self, on_topic: Callable[[Topic], None]) -> None:
        """Wake this replica's workers when any replica NOTIFYs; reconnects when the link drops."""
        self._listener = asyncio.create_task(self._listen(on_topic), name="postgres-listen")

    async def _listen(self, on_topic: Callable[[Topic], None]) -> None:
        topics = {t.value: t for t in Topic}

        def relay(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
            if isinstance(payload, str) and payload in topics:
                on_topic(topics[payload])

        while not self._closed:
            try:
                conn = await asyncpg.connect(self._url)
                try:
                    await conn.add_listener(CHANNEL, relay)
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    for topic in Topic:  # anything may have happened while we were not listening
                        on_topic(topic)
                    await lost.wait()  # close() cancels this task
                finally:
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        await conn.close()
            except Exception as exc:
                if not _unavailable(exc):
                    raise
                log.warning("listen_connection_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)  # then connect again; workers poll meanwhile

    # connections ---------------------------------------------------------------------------

    def _require_pool(self) -> asyncpg.Pool:
        if self._closed or self._pool is None:
            raise StoreError("store is closed")
        return self._pool

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                return await fn(conn)
        except Exception as exc:
            if _unavailable(exc):
                raise StoreError(f"PostgreSQL unavailable: {type(exc).__name__}") from None
            raise

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` in its own transaction on a pooled connection."""

        async def inside(conn: Conn) -> T:
            async with conn.transaction():
                return await fn(conn)

        return await self._read(inside)

    # group-committed transitions ------------------------------------------------------------

    async def transition(self, job_id: str, decide: Decision, *, task_id: str | None = None) -> Outcome:
        self._require_pool()
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((job_id, decide, task_id, fut))
        self._wake.set()
        return await fut

    async def _writer_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group = self._pending[: self._max]
                del self._pending[: self._max]
                await self._commit_group(group)
            if self._closed and not self._pending:
                return

    async def _commit_group(self, group: list[Pending]) -> None:
        try:
            results = await self._read(lambda conn: self._apply(conn, group))
        except StoreError as exc:
            for *_, fut in group:
                if not fut.done():
                    fut.set_exception(StoreError(str(exc)))
            return
        except asyncpg.PostgresError as exc:
            if len(group) > 1:  # one transition's SQL failed the group: give each its own try
                for item in group:
                    await self._commit_group([item])
                return
            log.error("transition_failed", error=repr(exc))
            if not group[0][3].done():
                group[0][3].set_exception(exc)  # that caller's own failure; the writer lives on
            return
        for (*_, fut), (ok, value) in zip(group, results, strict=True):
            if fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    async def _apply(self, conn: Conn, group: list[Pending]) -> list[tuple[bool, Any]]:
        now = time.time()
        async with conn.transaction():
            ids = sorted({job_id for job_id, *_ in group})
            jobs = {r[0]: rows.job(r) for r in await conn.fetch(LOCK_JOBS, ids)}
            task_ids = [t for _, _, t, _ in group if t]
            tasks = {r[0]: rows.task(r) for r in await conn.fetch(SELECT_TASKS, task_ids)} if task_ids else {}
            gp = rows.plan_group([(j, d, t) for j, d, t, _ in group], jobs, tasks, now)
            if gp.changed:
                await conn.executemany(UPDATE_JOB, gp.job_rows(MUTABLE))
            if gp.task_params:
                await conn.executemany(UPSERT_TASK, gp.task_params)
            if gp.event_params:
                await conn.executemany(INSERT_EVENT, gp.event_params)
            if gp.artifact_params:
                await conn.executemany(INSERT_ARTIFACT, gp.artifact_params)
            for event in gp.outbox:
                await write_outbox(conn, event, now)
            wakes = {_wakes(j.state) for i, j in gp.changed.items() if j.state != gp.read_states[i]}
            for topic in wakes - {None}:
                assert topic is not None
                await conn.execute(NOTIFY, topic.value)
        return gp.results

    # API keys ------------------------------------------------------------------------------

    async def add_api_key(self, tenant: str, key_hash: str, label: str) -> None:
        await self._read(lambda c: c.execute(INSERT_KEY, key_hash, tenant, label, time.time()))

    async def tenant_for_key(self, key_hash: str) -> str | None:
        tenant = await self._read(lambda c: c.fetchval(SELECT_KEY, key_hash))
        return str(tenant) if tenant is not None else None

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
        async def existing(c: Conn) -> tuple[BatchRow, list[JobRow], bool] | None:
            found = await c.fetchrow(SELECT_BATCH_BY_KEY, tenant, idempotency_key)
            if found is None:
                return None
            batch = rows.batch(found)
            if batch.request_hash != request_hash:
                raise IdempotencyConflict(str(idempotency_key))
            return batch, [rows.job(r) for r in await c.fetch(BATCH_JOBS, batch.id, -1, batch.total)], False

        async def create(c: Conn) -> tuple[BatchRow, list[JobRow], bool]:
            if idempotency_key is not None and (hit := await existing(c)) is not None:
                return hit
            batch = BatchRow(str(uuid.uuid4()), tenant, callback_url, idempotency_key, request_hash, len(items), now)
            await c.execute(INSERT_BATCH, *rows.batch_params(batch))
            params = [rows.new_job_params(str(uuid.uuid4()), batch, seq, item, now) for seq, item in enumerate(items)]
            await c.executemany(INSERT_JOB, params)
            await c.executemany(INSERT_EVENT, [(p[0], now, "accepted", "", "queued", "api", None) for p in params])
            await c.execute(NOTIFY, Topic.SUBMIT.value)
            jobs = [rows.job(r) for r in await c.fetch(BATCH_JOBS, batch.id, -1, len(items))]
            return batch, jobs, True

        try:
            return await self._tx(create)
        except asyncpg.UniqueViolationError:
            # Another replica committed the same Idempotency-Key first: answer with its batch.
            hit = await self._read(existing)
            if hit is None:
                raise
            return hit

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        row = await self._read(lambda c: c.fetchrow(SELECT_BATCH, batch_id))
        return rows.batch(row) if row else None

    async def batch_summary(self, batch_id: str) -> BatchSummary | None:
        async def fn(c: Conn) -> BatchSummary | None:
            row = await c.fetchrow(SELECT_BATCH, batch_id)
            if not row:
                return None
            counts = await c.fetch(BATCH_COUNTS, batch_id)
            spend = round(sum(float(r[2]) for r in counts), 6)
            return BatchSummary(rows.batch(row), {r[0]: int(r[1]) for r in counts}, spend)

        return await self._read(fn)

    async def list_batch_jobs(self, batch_id: str, *, state: State | None, after_seq: int, limit: int) -> list[JobRow]:
        if state is None:
            found = await self._read(lambda c: c.fetch(BATCH_JOBS, batch_id, after_seq, limit))
        else:
            found = await self._read(lambda c: c.fetch(BATCH_JOBS_IN_STATE, batch_id, state.value, after_seq, limit))
        return [rows.job(r) for r in found]

    async def list_batches(self, tenant: str, *, before: tuple[float, str] | None, limit: int) -> list[BatchSummary]:
        created_before, id_before = before or (math.inf, "")

        async def fn(c: Conn) -> list[BatchSummary]:
            found = [rows.batch(r) for r in await c.fetch(TENANT_BATCHES, tenant, created_before, id_before, limit)]
            if not found:
                return []
            return rows.batch_summaries(found, await c.fetch(BATCHES_COUNTS, [b.id for b in found]))

        return await self._read(fn)

    # jobs ----------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await self._read(lambda c: c.fetchrow(SELECT_JOB, job_id))
        return rows.job(row) if row else None

    async def job_tasks(self, job_id: str) -> list[TaskRow]:
        return [rows.task(r) for r in await self._read(lambda c: c.fetch(SELECT_JOB_TASKS, job_id))]

    async def job_events(self, job_id: str) -> list[EventRow]:
        return [rows.event(r) for r in await self._read(lambda c: c.fetch(SELECT_EVENTS, job_id))]

    async def job_artifacts(self, job_id: str) -> list[ArtifactRow]:
        return [rows.artifact(r) for r in await self._read(lambda c: c.fetch(SELECT_ARTIFACTS, job_id))]

    # work claims ---------------------------------------------------------------------------

    async def claim_queued(
        self, owner: str, *, now: float, limit: int, max_in_flight: int, lease_s: float, max_fetch_backlog: int = 0
    ) -> list[JobRow]:
        async def claim(c: Conn) -> list[JobRow]:
            await c.execute(CLAIM_LOCK)
            room = min(limit, max_in_flight - int(await c.fetchval(COUNT_IN_FLIGHT)))
            if room > 0 and max_fetch_backlog:
                room = min(room, max_fetch_backlog - int(await c.fetchval(COUNT_FETCHING)))
            if room <= 0:
                return []
            claimed = [rows.job(r) for r in await c.fetch(CLAIM_QUEUED, owner, now + lease_s, now, room)]
            detail = [orjson.dumps({"attempt": j.attempt}).decode() for j in claimed]
            await c.executemany(
                INSERT_EVENT,
                [
                    (j.id, now, "claim", "queued", "submitting", "submitter", d)
                    for j, d in zip(claimed, detail, strict=True)
                ],
            )
            return claimed

        return await self._tx(claim)

    async def claim_fetching(self, owner: str, *, now: float, limit: int, lease_s: float) -> list[JobRow]:
        found = await self._tx(lambda c: c.fetch(CLAIM_FETCHING, owner, now + lease_s, now, limit))
        return [rows.job(r) for r in found]

    async def claim_due(self, *, now: float, limit: int, hold_s: float) -> list[JobRow]:
        found = await self._tx(lambda c: c.fetch(CLAIM_DUE, now + hold_s, now, limit))
        return [rows.job(r) for r in found]

    async def stale_leases(self, *, now: float, limit: int) -> list[JobRow]:
        return [rows.job(r) for r in await self._read(lambda c: c.fetch(STALE_LEASES, now, limit))]

    async def aged_jobs(self, *, cutoff: float, limit: int) -> list[JobRow]:
        return [rows.job(r) for r in await self._read(lambda c: c.fetch(AGED_JOBS, cutoff, limit))]

    # figures -------------------------------------------------------------------------------

    async def job_counts(self) -> Mapping[str, int]:
        return {r[0]: int(r[1]) for r in await self._read(lambda c: c.fetch(JOB_COUNTS))}

    async def flow_counts(self) -> Mapping[str, int]:
        row = await self._read(lambda c: c.fetchrow(FLOW_COUNTS))
        assert row is not None  # one row of counts, always
        return rows.flow_counts(row)
