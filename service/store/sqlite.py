"""The SQLite driver (WAL): one writer connection on its own thread, one reader beside it.

The store's reads and transactions are written once as coroutines over `Conn`; here each one runs
whole on its connection's thread, driven to completion there (SQLite's calls never wait on the
event loop, so nothing in them suspends). One thread hop per read and per group commit, and the
event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from service.callback_origin import origin_of
from service.store.driver import Conn, Row, queries

T = TypeVar("T")
SQL = queries("sqlite")


def _dict_rows() -> Callable[[sqlite3.Cursor, tuple[Any, ...]], dict[str, Any]]:
    """A row factory making dicts, reading each cursor's column names once (one per connection:
    each connection is used by its own thread only)."""
    last: list[Any] = [None, ()]

    def row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
        if last[0] is not cursor:
            last[:] = [cursor, [d[0] for d in cursor.description]]
        return dict(zip(last[1], values, strict=True))

    return row


def _params(args: Sequence[Any]) -> Sequence[Any]:
    # A list parameter is an IN list: the statements read it with json_each.
    return [orjson.dumps(a).decode() if isinstance(a, list) else a for a in args]


def _drive(fn: Callable[[Conn], Awaitable[T]], conn: SqliteConn) -> T:
    """Run `fn(conn)` to completion on this thread: its awaits are SqliteConn's, which never suspend."""
    coro = fn(conn)
    assert isinstance(coro, Coroutine)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite read or transaction waited on the event loop")


class SqliteConn:
    """A connection for coroutines that run on its own thread (see `_drive`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.connection = conn
        self._savepoints = 0

    async def fetch(self, name: str, *args: Any) -> Sequence[Row]:
        return self.connection.execute(SQL[name], _params(args)).fetchall()

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        row: Row | None = self.connection.execute(SQL[name], _params(args)).fetchone()
        return row

    async def execute(self, name: str, *args: Any) -> int:
        sql = SQL[name]  # empty: a statement this dialect does not need (a lock, a NOTIFY)
        return self.connection.execute(sql, _params(args)).rowcount if sql else 0

    async def executemany(self, name: str, args: Iterable[Sequence[Any]]) -> None:
        params = list(args)  # rows of scalars: no IN lists here
        if params:
            self.connection.executemany(SQL[name], params)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.connection.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.connection.execute(f"ROLLBACK TO {name}")
            raise
        finally:
            self.connection.execute(f"RELEASE {name}")


class SqliteDriver:
    dialect = "sqlite"
    shared = False
    integrity_error = sqlite3.IntegrityError

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self._path = Path(path)
        self._synchronous = synchronous
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._w: sqlite3.Connection | None = None
        self._r: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._w = await loop.run_in_executor(self._writer, self._connect)
        self._r = await loop.run_in_executor(self._reader, self._connect)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for conn, thread in ((self._w, self._writer), (self._r, self._reader)):
            if conn is not None:
                await loop.run_in_executor(thread, conn.close)
            thread.shutdown(wait=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = _dict_rows()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        # Callback deliveries are keyed on their URL's origin (migration 0007, claim_deliveries).
        conn.create_function("segflow_origin", 1, origin_of, deterministic=True)
        return conn

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        assert self._r is not None, "store not open"
        return await asyncio.get_running_loop().run_in_executor(self._reader, _drive, fn, SqliteConn(self._r))

    async def write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._transaction, fn)

    def _transaction(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        conn = self._w
        assert conn is not None, "store not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _drive(fn, SqliteConn(conn))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def migrate(self, files: Sequence[tuple[int, str]]) -> None:
        def run() -> None:
            assert self._w is not None, "store not open"
            c = self._w
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

        await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def listen(self, on_payload: Callable[[str], None]) -> None:
        return None  # one process per file: the store wakes its own workers

    def unavailable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)
