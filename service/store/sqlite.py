"""The SQLite driver (WAL): one writer connection on its own thread, one reader beside it.

Every statement runs on its connection's thread, so the event loop never waits on the disk; the
store's group committer makes that one hop per statement of a group, not per caller.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from service.callback_origin import origin_of
from service.store.driver import Row, queries

T = TypeVar("T")
SQL = queries("sqlite")


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip([d[0] for d in cursor.description], values, strict=True))


def _params(args: Sequence[Any]) -> Sequence[Any]:
    # A list parameter is an IN list: the statements read it with json_each.
    return [orjson.dumps(a).decode() if isinstance(a, list) else a for a in args]


class SqliteConn:
    """A connection whose every call runs on its own thread."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor, *, begin: bool = False) -> None:
        self._conn, self._thread, self._begin = conn, thread, begin
        self._savepoints = 0

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the connection's thread (after BEGIN IMMEDIATE, in a write transaction)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_tx, fn)

    def _in_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._begin:
            self._conn.execute("BEGIN IMMEDIATE")  # lazily: a group that writes nothing takes no lock
            self._begin = False
        return fn(self._conn)

    async def fetch(self, name: str, *args: Any) -> Sequence[Row]:
        sql, params = SQL[name], _params(args)
        return await self.call(lambda c: c.execute(sql, params).fetchall())

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        sql, params = SQL[name], _params(args)
        row: Row | None = await self.call(lambda c: c.execute(sql, params).fetchone())
        return row

    async def execute(self, name: str, *args: Any) -> int:
        sql, params = SQL[name], _params(args)
        return await self.call(lambda c: c.execute(sql, params).rowcount)

    async def executemany(self, name: str, args: Iterable[Sequence[Any]]) -> None:
        sql, params = SQL[name], list(args)  # rows of scalars: no IN lists here
        if params:
            await self.call(lambda c: c.executemany(sql, params))

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        await self.call(lambda c: c.execute(f"SAVEPOINT {name}"))
        try:
            yield
        except BaseException:
            await self.call(lambda c: c.execute(f"ROLLBACK TO {name}"))
            raise
        finally:
            await self.call(lambda c: c.execute(f"RELEASE {name}"))


class SqliteDriver:
    dialect = "sqlite"
    shared = False
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self._path = Path(path)
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._w: SqliteConn | None = None
        self._r: SqliteConn | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._w = SqliteConn(await loop.run_in_executor(self._writer, self._connect), self._writer)
        self._r = SqliteConn(await loop.run_in_executor(self._reader, self._connect), self._reader)

    async def close(self) -> None:
        for conn, thread in ((self._w, self._writer), (self._r, self._reader)):
            if conn is not None:
                await conn.call(lambda c: c.close())
            thread.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = _dict_row
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        # Callback deliveries are keyed on their URL's origin (migration 0007, claim_deliveries).
        conn.create_function("segflow_origin", 1, origin_of, deterministic=True)
        return conn

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SqliteConn]:
        assert self._r is not None, "store not open"
        yield self._r

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[SqliteConn]:
        assert self._w is not None, "store not open"
        tx = SqliteConn(self._w._conn, self._writer, begin=True)
        try:
            yield tx
            await tx.call(lambda c: c.execute("COMMIT") if c.in_transaction else None)
        except BaseException:
            await tx.call(lambda c: c.execute("ROLLBACK") if c.in_transaction else None)
            raise

    async def migrate(self, files: Sequence[tuple[int, str]]) -> None:
        def run(c: sqlite3.Connection) -> None:
            c.execute(SQL["create_migrations"])
            done = {r["version"] for r in c.execute(SQL["applied_migrations"])}
            for version, sql in files:
                if version in done:
                    continue
                # One script, one transaction: a migration applies whole or not at all.
                record = f"INSERT INTO schema_migrations VALUES ({version}, {time.time()})"
                try:
                    c.executescript(f"BEGIN IMMEDIATE;\n{sql}\n;{record};\nCOMMIT;")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise

        assert self._w is not None, "store not open"
        await self._w.call(run)

    async def listen(self, on_payload: Callable[[str], None]) -> None:
        return None  # one process per file: the store wakes its own workers

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)
