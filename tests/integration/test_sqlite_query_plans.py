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
    "lock_jobs",  # every group of transitions reads its jobs so
    # Read by every process every few seconds (the adaptive poll and adoption window).
    "recent_run_times",
    "recent_heard_after",
    "known_task_ids",
    "gauge_jobs",  # every /metrics scrape
    "gauge_others",
    "hold_batch",
    "hold_tenant",
    "reserve_job",  # every create
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
        plan = _plan(conn, sql, [0] * _parameters(sql))
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


PRUNER_QUERIES = [
    "expired_masks",
    "expired_jobs",
    "empty_batches",
    "expired_outbox",
    "still_expired_jobs",
    "unpruned_masks_of_jobs",
    "finished_deliveries_of",
]


@pytest.mark.parametrize("name", PRUNER_QUERIES)
def test_pruner_query_uses_an_index(schema: Path, name: str) -> None:
    """The pruner's queries walk an index (migration 0009) rather than scanning the table they
    prune: a scan of a million-row table inside the group commit would hold the writer for seconds."""
    sql = queries("sqlite")[name]
    params = ["[]" if "json_each(?1)" in sql and i == 0 else 0 for i in range(_parameters(sql))]
    conn = sqlite3.connect(schema)
    try:
        plan = _plan(conn, sql, params)
    finally:
        conn.close()
    # Plans name tables by their alias; the only scan allowed is of the id list passed in.
    assert not [step for step in plan if step.startswith("SCAN ") and "json_each" not in step], plan
    assert plan[0].startswith("SEARCH ") and "INDEX" in plan[0], plan


def _parameters(sql: str) -> int:
    return max((int(n) for n in re.findall(r"\?(\d+)", sql)), default=0)


def _plan(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
