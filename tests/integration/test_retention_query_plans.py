"""The pruner's SQLite queries walk an index (migration 0009) rather than scanning the table they
prune: a scan of a million-row table inside the group commit would hold the writer for seconds."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from service.store import open_store_for
from service.store.driver import queries

PRUNER_QUERIES = [
    "expired_masks",
    "expired_jobs",
    "empty_batches",
    "expired_outbox",
    "still_expired_jobs",
    "unpruned_masks_of_jobs",
    "finished_deliveries_of",
]


@pytest.fixture
async def schema(tmp_path: Path) -> Path:
    path = tmp_path / "segflow.db"
    store = open_store_for(f"sqlite:///{path}")
    await store.open()
    await store.close()
    return path


@pytest.mark.parametrize("name", PRUNER_QUERIES)
def test_pruner_query_uses_an_index(schema: Path, name: str) -> None:
    sql = queries("sqlite")[name]
    count = max((int(n) for n in re.findall(r"\?(\d+)", sql)), default=0)
    params = ["[]" if "json_each(?1)" in sql and i == 0 else 0 for i in range(count)]
    conn = sqlite3.connect(schema)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()
    # Plans name tables by their alias; the only scan allowed is of the id list passed in.
    assert not [step for step in plan if step.startswith("SCAN ") and "json_each" not in step], plan
    assert plan[0].startswith("SEARCH ") and "INDEX" in plan[0], plan
