"""The store's SQL lives in one file of named statements per dialect; both must define the same
names, or a method written once would fail on one database only."""

from __future__ import annotations

from service.store.driver import queries


def test_both_dialects_define_the_same_statements() -> None:
    sqlite, postgres = queries("sqlite"), queries("postgres")
    assert sorted(sqlite) == sorted(postgres)
    assert "update_job" in sqlite and all(sql.strip() for sql in (*sqlite.values(), *postgres.values()))
