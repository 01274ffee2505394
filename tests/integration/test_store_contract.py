"""The Store contract, run on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.jobs import Change, JobInput, JobRow, TaskRow, TaskUpsert
from service.states import Event, State
from service.store import IdempotencyConflict, Store, open_store_for


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = open_store_for(database_url, group_commit_max=64)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def batch_of(store: Store, n: int, key: str | None = None, tenant: str = "acme") -> list[JobRow]:
    items = [JobInput(f"https://img.example/{i}.png", "car", metadata={"i": i}) for i in range(n)]
    _, jobs, _ = await store.create_batch(
        tenant, items, callback_url=None, idempotency_key=key, request_hash=f"h{n}", now=100.0
    )
    return jobs


def event(e: Event, **values: object) -> Change:
    return Change(e, "test", set=values)


async def test_batches_are_stored_with_their_jobs_in_order(store: Store) -> None:
    jobs = await batch_of(store, 5)
    assert [j.seq for j in jobs] == [0, 1, 2, 3, 4]
    assert {j.state for j in jobs} == {State.QUEUED}
    assert jobs[3].metadata == {"i": 3}
    summary = await store.batch_summary(jobs[0].batch_id)
    assert summary is not None and summary.batch.total == 5 and summary.counts == {"queued": 5}
    page = await store.list_batch_jobs(jobs[0].batch_id, state=None, after_seq=1, limit=2)
    assert [j.seq for j in page] == [2, 3]
    assert [e.event for e in await store.job_events(jobs[0].id)] == ["accepted"]


async def test_a_tenants_batches_are_listed_newest_first_with_their_progress(store: Store) -> None:
    async def create(tenant: str, n: int, now: float) -> list[JobRow]:
        items = [JobInput(f"https://img.example/{i}.png", "car") for i in range(n)]
        _, jobs, _ = await store.create_batch(
            tenant, items, callback_url=None, idempotency_key=None, request_hash="h", now=now
        )
        return jobs

    oldest = await create("acme", 3, 100.0)
    twins = [await create("acme", 1, 200.0), await create("acme", 2, 200.0)]  # same time: ordered by id
    await create("globex", 1, 300.0)
    await store.transition(oldest[0].id, lambda j, t: event(Event.CANCEL, price_usd=0.25))

    listed = await store.list_batches("acme", before=None, limit=10)
    twin_ids = sorted((jobs[0].batch_id for jobs in twins), reverse=True)
    assert [s.batch.id for s in listed] == [*twin_ids, oldest[0].batch_id]
    last = listed[-1]
    assert last.batch.total == 3 and last.counts == {"queued": 2, "cancelled": 1} and last.done == 1
    assert last.spend_usd == pytest.approx(0.25)
    page = await store.list_batches("acme", before=(listed[0].batch.created_at, listed[0].batch.id), limit=1)
    assert [s.batch.id for s in page] == [listed[1].batch.id]
    rest = await store.list_batches("acme", before=(page[0].batch.created_at, page[0].batch.id), limit=5)
    assert [s.batch.id for s in rest] == [oldest[0].batch_id]
    assert await store.list_batches("initech", before=None, limit=10) == []


async def test_idempotency_key_returns_the_same_batch_and_refuses_another_body(store: Store) -> None:
    first = await batch_of(store, 3, key="k1")
    again = await batch_of(store, 3, key="k1")
    assert [j.id for j in again] == [j.id for j in first]
    with pytest.raises(IdempotencyConflict):
        await batch_of(store, 4, key="k1")
    other_tenant = await batch_of(store, 3, key="k1", tenant="globex")
    assert other_tenant[0].batch_id != first[0].batch_id


async def test_concurrent_creates_with_one_key_make_one_batch(store: Store) -> None:
    results = await asyncio.gather(*(batch_of(store, 2, key="race") for _ in range(8)))
    assert len({tuple(j.id for j in jobs) for jobs in results}) == 1


async def test_racing_transitions_exactly_one_wins(store: Store) -> None:
    [job] = await batch_of(store, 1)
    await store.claim_queued("w", now=1e12, limit=1, max_in_flight=10, lease_s=60)
    outcomes = await asyncio.gather(
        *(store.transition(job.id, lambda j, t, i=i: event(Event.CREATED, task_id=f"T{i}")) for i in range(100))
    )
    assert sum(o.applied for o in outcomes) == 1
    after = await store.get_job(job.id)
    assert after is not None and after.state is State.SUBMITTED
    assert [e.event for e in await store.job_events(job.id)] == ["accepted", "claim", "created"]


async def test_decide_sees_the_job_and_its_task_inside_the_transaction(store: Store) -> None:
    [job] = await batch_of(store, 1)
    await store.claim_queued("w", now=1e12, limit=1, max_in_flight=10, lease_s=60)
    upsert = TaskUpsert("T1", 1, "created", "pending")
    await store.transition(job.id, lambda j, t: Change(Event.CREATED, "test", set={"task_id": "T1"}, task=upsert))
    seen: list[tuple[JobRow | None, TaskRow | None]] = []

    def spy(j: JobRow | None, t: TaskRow | None) -> Change | None:
        seen.append((j, t))
        return None

    outcome = await store.transition(job.id, spy, task_id="T1")
    assert not outcome.applied
    ((j, t),) = seen
    assert j is not None and j.task_id == "T1" and t is not None and (t.job_id, t.origin) == (job.id, "created")
    assert (await store.transition("no-such-job", spy)).before is None


async def test_one_task_twice_in_a_group_is_written_as_the_two_writes_in_turn(store: Store) -> None:
    """A webhook and a poll of one task committed together: the task ends in the later status and
    keeps the first timing learned of each kind."""
    [job] = await batch_of(store, 1)
    await store.claim_queued("w", now=1e12, limit=1, max_in_flight=10, lease_s=60)
    first = TaskUpsert("T1", 1, "created", "running", run_s=None, heard_after_s=2.0)
    then = TaskUpsert("T1", 1, "created", "completed", run_s=5.0, heard_after_s=9.0)
    created = Change(Event.CREATED, "test", set={"task_id": "T1"}, task=first)
    outcomes = await asyncio.gather(
        store.transition(job.id, lambda j, t: created, task_id="T1"),
        store.transition(job.id, lambda j, t: Change(None, "test", task=then), task_id="T1"),
    )
    assert all(o.applied for o in outcomes)
    [task] = await store.job_tasks(job.id)
    assert (task.status, task.origin) == ("completed", "created")
    assert await store.recent_timings(limit=10) == ([5.0], [2.0])


async def test_an_event_that_does_not_apply_changes_nothing(store: Store) -> None:
    [job] = await batch_of(store, 1)
    outcome = await store.transition(job.id, lambda j, t: event(Event.STORED))
    assert not outcome.applied
    assert (await store.get_job(job.id)).state is State.QUEUED  # type: ignore[union-attr]


async def test_claims_respect_limit_cap_backoff_and_leases(store: Store) -> None:
    jobs = await batch_of(store, 6)
    later = jobs[5]
    await store.claim_queued("w", now=1e12, limit=0, max_in_flight=0, lease_s=1)  # no room: nothing
    await store.transition(later.id, lambda j, t: event(Event.CLAIM, lease_owner="x", lease_until=0.0))
    await store.transition(later.id, lambda j, t: event(Event.RETRY_LATER, not_before=5e12))
    first = await store.claim_queued("w1", now=1e12, limit=2, max_in_flight=3, lease_s=30)
    second = await store.claim_queued("w2", now=1e12, limit=10, max_in_flight=3, lease_s=30)
    assert len(first) == 2 and len(second) == 1  # the in-flight cap is 3
    assert {j.id for j in first}.isdisjoint(j.id for j in second)
    assert later.id not in {j.id for j in first + second}  # backing off until 5e12
    assert all(j.state is State.SUBMITTING and j.lease_until == 1e12 + 30 for j in first)
    stale = await store.stale_leases(now=1e12 + 31, limit=10)
    assert {j.id for j in stale} == {j.id for j in first + second}


async def test_no_job_is_claimed_while_the_fetch_backlog_is_full(store: Store) -> None:
    jobs = await batch_of(store, 6)
    claimed = await store.claim_queued("w", now=1e12, limit=3, max_in_flight=10, lease_s=30, max_fetch_backlog=2)
    assert len(claimed) == 2  # the backlog is empty, but only 2 masks may be waiting at a time
    for i, job in enumerate(claimed):
        await store.transition(job.id, lambda j, t, i=i: event(Event.CREATED, task_id=f"T{i}"))
        await store.transition(job.id, lambda j, t: event(Event.COMPLETED, lease_until=0.0))
    assert await store.claim_queued("w", now=1e12, limit=3, max_in_flight=10, lease_s=30, max_fetch_backlog=2) == []
    await store.transition(claimed[0].id, lambda j, t: event(Event.STORED))
    after = await store.claim_queued("w", now=1e12, limit=3, max_in_flight=10, lease_s=30, max_fetch_backlog=2)
    assert len(after) == 1  # one mask stored: room for one more
    unlimited = await store.claim_queued("w", now=1e12, limit=9, max_in_flight=10, lease_s=30, max_fetch_backlog=0)
    assert len(unlimited) == len(jobs) - 3


async def test_concurrent_claimers_never_share_a_job(store: Store) -> None:
    await batch_of(store, 40)
    claims = await asyncio.gather(
        *(store.claim_queued(f"w{i}", now=1e12, limit=7, max_in_flight=25, lease_s=30) for i in range(6))
    )
    ids = [j.id for batch in claims for j in batch]
    assert len(ids) == len(set(ids)) == 25


async def test_due_polls_are_held_once_claimed(store: Store) -> None:
    jobs = await batch_of(store, 3)
    await store.claim_queued("w", now=1e12, limit=3, max_in_flight=10, lease_s=30)
    for i, j in enumerate(jobs):
        await store.transition(j.id, lambda jj, t, i=i: event(Event.CREATED, task_id=f"T{i}", next_check_at=50.0 * i))
    due = await store.claim_due(now=60.0, limit=10, hold_s=100.0)
    assert {j.id for j in due} == {jobs[0].id, jobs[1].id}
    assert await store.claim_due(now=60.0, limit=10, hold_s=100.0) == []  # held for 100 s


async def test_aged_jobs_are_the_live_ones_past_the_cutoff(store: Store) -> None:
    jobs = await batch_of(store, 2)
    await store.transition(jobs[0].id, lambda j, t: event(Event.CANCEL))
    assert [j.id for j in await store.aged_jobs(cutoff=101.0, limit=10)] == [jobs[1].id]
    assert await store.aged_jobs(cutoff=99.0, limit=10) == []


async def test_api_keys_are_looked_up_by_hash(store: Store) -> None:
    await store.add_api_key("acme", "a" * 64, "ci")
    assert await store.tenant_for_key("a" * 64) == "acme"
    assert await store.tenant_for_key("b" * 64) is None


async def test_writes_are_seen_by_a_second_store_and_reopening_migrates_nothing(database_url: str) -> None:
    one = open_store_for(database_url)
    await one.open()
    jobs = await batch_of(one, 2)
    two = open_store_for(database_url)
    await two.open()
    try:
        assert (await two.get_job(jobs[1].id)) == jobs[1]
    finally:
        await two.close()
        await one.close()


async def test_terminal_transitions_write_their_event_and_batch_completion(store: Store) -> None:
    jobs = await batch_of(store, 2)
    for j in jobs:
        await store.transition(j.id, lambda jj, t: event(Event.CANCEL))
    events = await store.list_events("acme", since=0.0, limit=10)
    assert sorted(e.type for e in events) == ["batch.completed", "job.cancelled", "job.cancelled"]
    assert await store.list_events("globex", since=0.0, limit=10) == []
