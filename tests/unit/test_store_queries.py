"""The store's SQL lives in one file of named statements per dialect; both must define the same
names, or a method written once would fail on one database only."""

from __future__ import annotations

from service.store.driver import queries


def test_both_dialects_define_the_same_statements() -> None:
    sqlite, postgres = queries("sqlite"), queries("postgres")
    assert sorted(sqlite) == sorted(postgres)
    assert all(sqlite[name] or postgres[name] for name in sqlite)  # SQLite needs no locks or NOTIFY
    assert postgres["lock_claims"] and not sqlite["lock_claims"]
