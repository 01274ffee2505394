"""SQLite group commit: many callers share one transaction, yet each is answered only after the
COMMIT that holds its write, one caller's failure does not undo the others, and a failed COMMIT
acknowledges nobody."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from service.jobs import Change, JobInput, JobRow, TaskRow
from service.states import Event, State
from service.store import Store, StoreError, open_store_for
from service.store.sqlite import SqliteConn


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    s = open_store_for(f"sqlite:///{tmp_path / 'gc.db'}", group_commit_max=64)
    await s.open()
    yield s  # type: ignore[misc]
    await s.close()


async def queued_jobs(store: Store, n: int) -> list[JobRow]:
    _, jobs, _ = await store.create_batch(
        "t",
        [JobInput("https://x/i.png", f"p{i}") for i in range(n)],
        callback_url=None,
        idempotency_key=None,
        request_hash="h",
        now=0.0,
    )
    return jobs


def cancel(job: JobRow | None, _task: TaskRow | None) -> Change | None:
    return Change(Event.CANCEL, "test")


def boom(job: JobRow | None, _task: TaskRow | None) -> Change | None:
    raise ValueError("this caller's own problem")


async def test_every_caller_is_answered_after_its_commit(store: Store, tmp_path: Path) -> None:
    jobs = await queued_jobs(store, 200)
    outcomes = await asyncio.gather(*(store.transition(j.id, cancel) for j in jobs))
    assert all(o.applied for o in outcomes)
    # An independent connection sees all 200 at once: nothing was acknowledged before COMMIT.
    raw = sqlite3.connect(tmp_path / "gc.db")
    try:
        counts = dict(raw.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        raw.close()
    assert counts == {"cancelled": 200}


async def test_one_failing_caller_does_not_undo_the_others(store: Store) -> None:
    jobs = await queued_jobs(store, 21)
    calls = [store.transition(j.id, boom if i == 10 else cancel) for i, j in enumerate(jobs)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[10], ValueError)
    assert sum(1 for r in results if not isinstance(r, BaseException) and r.applied) == 20
    survivor = await store.get_job(jobs[10].id)
    assert survivor is not None and survivor.state is State.QUEUED
    assert [e.event for e in await store.job_events(jobs[10].id)] == ["accepted"]


async def test_a_failed_commit_acknowledges_nobody_in_its_group(store: Store) -> None:
    jobs = await queued_jobs(store, 10)

    def orphan(conn: sqlite3.Connection) -> None:
        # A foreign-key violation deferred to COMMIT makes the whole group's COMMIT fail.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute(
            "INSERT INTO tasks (task_id, job_id, attempt, origin, status, created_at, updated_at)"
            " VALUES ('t-x', 'no-such-job', 1, 'created', 'pending', 0, 0)"
        )

    async def orphan_task(tx: SqliteConn) -> None:
        await tx.call(orphan)

    writes = [store._write(orphan_task), *(store.transition(j.id, cancel) for j in jobs)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert {(await store.get_job(j.id)).state for j in jobs} == {State.QUEUED}  # type: ignore[union-attr]
    # The writer is healthy afterwards.
    assert (await store.transition(jobs[0].id, cancel)).applied


async def test_a_closed_store_refuses_writes(store: Store) -> None:
    jobs = await queued_jobs(store, 1)
    await store.close()
    with pytest.raises(StoreError):
        await store.transition(jobs[0].id, cancel)
