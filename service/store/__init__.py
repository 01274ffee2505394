"""The store: one `Store` over a driver per database (SQLite, PostgreSQL)."""

from __future__ import annotations

from service.store.store import IdempotencyConflict, Store, StoreError

__all__ = ["IdempotencyConflict", "Store", "StoreError", "open_store_for"]


def open_store_for(database_url: str, *, group_commit_max: int = 256) -> Store:
    """The store a database URL names (not yet opened)."""
    if database_url.startswith("sqlite:///"):
        from service.store.sqlite import SqliteDriver

        return Store(SqliteDriver(database_url.removeprefix("sqlite:///")), group_commit_max=group_commit_max)
    if database_url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresDriver

        return Store(PostgresDriver(database_url), group_commit_max=group_commit_max)
    raise ValueError("database URL must be sqlite:///PATH or postgresql://…")
