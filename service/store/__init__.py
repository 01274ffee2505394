"""The store: one interface (`base.Store`), a SQLite and a PostgreSQL implementation."""

from __future__ import annotations

from service.store.base import Store

__all__ = ["Store", "open_store_for"]


def open_store_for(database_url: str, *, group_commit_max: int = 256) -> Store:
    """The store implementation a database URL names (not yet opened)."""
    if database_url.startswith("sqlite:///"):
        from service.store.sqlite import SqliteStore

        return SqliteStore(database_url.removeprefix("sqlite:///"), group_commit_max=group_commit_max)
    if database_url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore

        return PostgresStore(database_url, group_commit_max=group_commit_max)
    raise ValueError("database URL must be sqlite:///PATH or postgresql://…")
