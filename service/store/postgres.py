"""The PostgreSQL driver (asyncpg): a pool for reads and each group's transaction, and a LISTEN
connection that relays every replica's NOTIFY on channel `segflow`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import asyncpg
import asyncpg.pool
import structlog

from service.store.driver import Conn, Row, queries

T = TypeVar("T")
SQL = queries("postgres")
CHANNEL = "segflow"
ACQUIRE_TIMEOUT_S = 5.0
log = structlog.get_logger("segflow.store.postgres")
Pooled: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# What losing the server looks like to asyncpg.
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes meaning "the database is not there right now" rather than "this SQL is wrong":
# connection exceptions, insufficient resources, operator intervention, not accepting connections.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "55000")


class PostgresConn:
    def __init__(self, conn: Pooled) -> None:
        self._conn = conn

    async def fetch(self, name: str, *args: Any) -> Sequence[Row]:
        return await self._conn.fetch(SQL[name], *args)

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        return await self._conn.fetchrow(SQL[name], *args)

    async def execute(self, name: str, *args: Any) -> int:
        status = await self._conn.execute(SQL[name], *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def executemany(self, name: str, args: Iterable[Sequence[Any]]) -> None:
        params, sql = list(args), SQL[name]
        if params and "unnest(" in sql:  # one array per column: one statement for all the rows
            await self._conn.execute(sql, *map(list, zip(*params, strict=True)))
        elif params:
            await self._conn.executemany(sql, params)  # a Bind/Execute per row

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._conn.transaction():  # nested in the group's: a savepoint
            yield


class PostgresDriver:
    dialect = "postgres"
    shared = True
    integrity_error = asyncpg.UniqueViolationError

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._writers: set[int] = set()  # server pids of our own write connections

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size)

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pool:
            await self._pool.close()

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        assert self._pool is not None, "store not open"
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await fn(PostgresConn(conn))

    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        assert self._pool is not None, "store not open"
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
            self._writers.add(conn.get_server_pid())
            return await fn(PostgresConn(conn))

    async def migrate(self, files: Sequence[tuple[int, str]]) -> None:
        assert self._pool is not None, "store not open"
        async with self._pool.acquire() as conn:
            await conn.execute(SQL["lock_migrations"])
            try:
                await conn.execute(SQL["create_migrations"])
                done = {r["version"] for r in await conn.fetch(SQL["applied_migrations"])}
                for version, sql in files:
                    if version not in done:
                        async with conn.transaction():
                            await conn.execute(sql)
                            await conn.execute(SQL["record_migration"], version, time.time())
            finally:
                await conn.execute(SQL["unlock_migrations"])

    async def listen(self, on_payload: Callable[[str], None]) -> None:
        """Returns once listening (or after ACQUIRE_TIMEOUT_S; it keeps trying in the background)."""
        listening = asyncio.Event()
        self._listener = asyncio.create_task(self._listen(on_payload, listening), name="postgres-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listening.wait(), ACQUIRE_TIMEOUT_S)

    async def _listen(self, on_payload: Callable[[str], None], listening: asyncio.Event) -> None:
        def relay(_conn: Any, pid: int, _channel: str, payload: object) -> None:
            # Our own commits woke this process already; only other replicas' are news.
            if isinstance(payload, str) and pid not in self._writers:
                on_payload(payload)

        while True:
            try:
                conn = await asyncpg.connect(self._url)
                try:
                    await conn.add_listener(CHANNEL, relay)
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    on_payload("")  # anything may have happened while nobody listened
                    listening.set()
                    await lost.wait()  # close() cancels this task
                finally:
                    with contextlib.suppress(*_CONNECTION_ERRORS):
                        await conn.close()
            except Exception as exc:
                if not self.unavailable(exc):
                    raise
                log.warning("listen_connection_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)  # then connect again; workers poll meanwhile

    def unavailable(self, exc: BaseException) -> bool:
        if isinstance(exc, _CONNECTION_ERRORS):
            return True
        state = getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, asyncpg.PostgresError) and state.startswith(_UNAVAILABLE_SQLSTATES)
