"""The workers' hot queries on SQLite reach their rows through an index, never by scanning the
jobs table: a scan costs ~50 ms per claim at 250k jobs and grows with every job ever stored, so a
backlog of completions starved the fetcher. Checked with EXPLAIN QUERY PLAN on the migrated schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from service.store import open_store_for
from service.store.driver import queries

HOT_QUERIES = [
    "claim_queued",
    "claim_fetching",
    "claim_due",
    "stale_leases",
    "aged_jobs",
    "count_in_flight",
    "count_fetching",
    # Read by every process every few seconds (the adaptive poll and adoption window).
    "recent_run_times",
    "recent_heard_after",
    "known_task_ids",
    "gauge_jobs",  # every /metrics scrape
    "gauge_others",
]


@pytest.fixture
async def schema(tmp_path: Path) -> Path:
    path = tmp_path / "segflow.db"
    store = open_store_for(f"sqlite:///{path}")
    await store.open()
    await store.close()
    return path


@pytest.mark.parametrize("name", HOT_QUERIES)
def test_hot_query_uses_an_index(schema: Path, name: str) -> None:
    sql = queries("sqlite")[name]
    conn = sqlite3.connect(schema)
    try:
        plan = [
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {sql}", [0] * max((int(n) for n in re.findall(r"\?(\d+)", sql)), default=0)
            )
        ]
        partial = {
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%WHERE%'")
        }
    finally:
        conn.close()
    # Walking a partial index visits only the rows in its states (a count of jobs being fetched);
    # any other scan of jobs, with or without a full index, grows with every job ever stored.
    scans = [step for step in plan if step.startswith(("SCAN jobs", "SCAN tasks", "SCAN deliveries"))]
    assert all(step.rsplit(" ", 1)[-1] in partial for step in scans), plan
    assert any("INDEX" in step for step in plan), plan
