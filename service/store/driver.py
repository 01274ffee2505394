"""What the one `Store` needs of a database: a thin driver per dialect (SQLite, PostgreSQL) with a
handful of primitives, and the dialect's SQL as named statements (`sql/<dialect>.sql`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cache
from importlib import resources
from typing import Any, Protocol


class Row(Protocol):
    """A result row, read by column name (sqlite3 rows as dicts, asyncpg records)."""

    def __getitem__(self, key: str, /) -> Any: ...
    def keys(self) -> Iterable[str]: ...


_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries(dialect: str) -> Mapping[str, str]:
    """The statements of `sql/<dialect>.sql` by name: each starts at its `-- name: <name>` line."""
    text = resources.files(__package__).joinpath("sql", f"{dialect}.sql").read_text()
    parts = _NAME.split(text)[1:]
    found = {}
    for name, body in zip(parts[::2], parts[1::2], strict=True):
        if name in found:
            raise ValueError(f"{dialect}.sql: {name} defined twice")
        found[name] = body.strip().rstrip(";")
    return found


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) of every `migrations/<dialect>/NNNN_name.sql`, oldest first."""
    folder = resources.files(__package__).joinpath("migrations", dialect)
    return sorted((int(f.name.split("_", 1)[0]), f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))


class Conn(Protocol):
    """One connection, inside a transaction when it came from `Driver.writing`."""

    async def fetch(self, name: str, *args: Any) -> Sequence[Row]: ...
    async def fetchrow(self, name: str, *args: Any) -> Row | None: ...
    async def execute(self, name: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, name: str, args: Iterable[Sequence[Any]]) -> None: ...
    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: an exception inside undoes only what it wrote."""
        ...


class Driver(Protocol):
    dialect: str
    #: Other processes may write to the same database (so their workers need a NOTIFY).
    shared: bool

    @property
    def integrity_error(self) -> type[Exception]:
        """What a unique-key violation raises."""
        ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def reading(self) -> AbstractAsyncContextManager[Conn]: ...
    def writing(self) -> AbstractAsyncContextManager[Conn]:
        """One transaction, committed durably when the block exits without an exception."""
        ...

    async def migrate(self, files: Sequence[tuple[int, str]]) -> None:
        """Apply each (version, script) not yet applied, oldest first, each in one transaction."""
        ...

    async def listen(self, on_payload: Callable[[str], None]) -> None:
        """Call `on_payload` for every NOTIFY any process sends (a no-op where nobody else can)."""
        ...

    def unavailable(self, exc: BaseException) -> bool:
        """True when `exc` means the database cannot be reached, not that the SQL is wrong."""
        ...
