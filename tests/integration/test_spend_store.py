"""The store's side of fair and bounded spending (issue 19), on SQLite and PostgreSQL: fair claims
across tenants, reservations that two replicas cannot both pass a cap with, and settlement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest

from service import spend
from service.jobs import Change, JobInput, JobRow
from service.states import Event, State
from service.store import Reservation, Store, open_store_for
from service.store.driver import queries

NO_CAPS = spend.Caps(None, None, None)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = open_store_for(database_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def batch(store: Store, tenant: str, n: int, now: float, cap: float | None = None) -> list[JobRow]:
    items = [JobInput(f"https://img.example/{tenant}/{i}.png", "car") for i in range(n)]
    _, jobs, _ = await store.create_batch(
        tenant, items, callback_url=None, idempotency_key=None, request_hash="h", now=now, max_spend_usd=cap
    )
    return jobs


async def claim(store: Store, limit: int, **kw: int) -> list[JobRow]:
    return await store.claim_queued("me", now=1000.0, limit=limit, max_in_flight=100, lease_s=60.0, **kw)


async def test_claims_share_slots_across_tenants_and_keep_each_tenants_order(store: Store) -> None:
    big = await batch(store, "acme", 20, now=100.0)
    small = await batch(store, "globex", 3, now=200.0)  # queued later, behind all of acme's
    first = await claim(store, 6)
    assert {j.id for j in first if j.tenant == "globex"} == {j.id for j in small}
    assert sorted(j.seq for j in first if j.tenant == "acme") == [0, 1, 2]  # FIFO within a tenant
    # acme has 3 in flight, globex 3: the next slots go in turns, acme's next jobs in order.
    more = await claim(store, 4)
    assert sorted(j.seq for j in more) == [3, 4, 5, 6] and {j.tenant for j in more} == {"acme"}
    assert await claim(store, 10, tenant_max_in_flight=7) == []  # acme at its cap, globex has none queued
    rest = await claim(store, 100)
    assert len(rest) == len(big) - 7


async def test_two_replicas_reserving_at_once_never_pass_a_batch_cap(database_url: str) -> None:
    replicas = [open_store_for(database_url), open_store_for(database_url)]
    for r in replicas:
        await r.open()
    try:
        jobs = await batch(replicas[0], "acme", 10, now=100.0, cap=0.05)
        claimed = await claim(replicas[0], 10)
        assert len(claimed) == 10
        answers = await asyncio.gather(
            *(
                replicas[i % 2].reserve(j, 0.01, now=1000.0, defaults=NO_CAPS, send_lease_until=1040.0)
                for i, j in enumerate(claimed)
            )
        )
        assert sum(a.held for a in answers) == 5
        assert all("max_spend_usd of $0.05" in str(a.reason) for a in answers if not a.held)
        totals = await replicas[1].spend_totals("acme", jobs[0].batch_id, at=1000.0)
        assert totals["batch"] == pytest.approx(0.05) and totals["day"] == pytest.approx(0.05)
    finally:
        for r in replicas:
            await r.close()


async def test_a_price_settles_the_reservation_and_a_create_that_did_not_happen_releases_it(store: Store) -> None:
    jobs = await batch(store, "acme", 2, now=100.0, cap=1.0)
    a, b = await claim(store, 2)
    for j in (a, b):
        assert (await store.reserve(j, 0.1, now=1000.0, defaults=NO_CAPS, send_lease_until=1040.0)).held
    await store.transition(b.id, lambda j, _t: Change(Event.RETRY_LATER, "test"))  # a 429: nothing was paid
    for e, extra in ((Event.CREATED, {"task_id": "t1"}), (Event.COMPLETED, {}), (Event.STORED, {"price_usd": 0.02})):
        await store.transition(a.id, lambda j, _t, e=e, extra=extra: Change(e, "test", set=extra))
    settled, released = await store.get_job(a.id), await store.get_job(b.id)
    assert settled is not None and settled.state is State.SUCCEEDED and settled.reserved_usd is None
    assert released is not None and released.state is State.QUEUED and released.reserved_usd is None
    totals = await store.spend_totals("acme", jobs[0].batch_id, at=1000.0)
    assert totals["batch"] == pytest.approx(0.02) and totals["month"] == pytest.approx(0.02)
    summary = await store.batch_summary(jobs[0].batch_id)
    assert summary is not None and summary.spend_usd == pytest.approx(0.02) and summary.reserved_usd == 0


async def test_the_postgres_claim_reaches_queued_jobs_through_the_tenant_index(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite plans: tests/integration/test_sqlite_query_plans.py")
    store = open_store_for(database_url)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET enable_seqscan = off")  # an empty table: ask whether an index path exists
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + queries("postgres")["claim_queued"], 0.0, 5, 9))
    finally:
        await conn.close()
    assert "jobs_tenant_queued" in plan and "Seq Scan on jobs" not in plan, plan


async def test_a_refusal_holds_the_rest_of_a_waiting_batch_back_until_its_recheck(store: Store) -> None:
    jobs = await batch(store, "acme", 6, now=100.0, cap=0.02)
    other = await batch(store, "acme", 2, now=200.0)  # no cap of its own: not held
    first = await claim(store, 3)
    answers = [
        await store.reserve(j, 0.01, now=1000.0, defaults=NO_CAPS, send_lease_until=1040.0, hold_s=30.0) for j in first
    ]
    assert [a.held for a in answers] == [True, True, False]
    held = [await store.get_job(j.id) for j in jobs[3:]]
    assert all(j is not None and j.not_before == 1030.0 and j.error_code == "budget_wait" for j in held)
    assert {j.id for j in await claim(store, 10)} == {j.id for j in other}  # nothing of the held batch


async def test_a_held_reservation_marks_the_create_sent_in_the_same_write_and_a_refused_one_does_not(
    store: Store,
) -> None:
    await store.set_tenant_budget("acme", 0.015, None)
    _, jobs, _ = await store.create_batch(
        "acme",
        [JobInput(f"https://img.example/acme/{i}.png", "car") for i in range(2)],
        callback_url=None,
        idempotency_key=None,
        request_hash="h",
        now=100.0,
        on_budget="fail",
    )
    a, b = await claim(store, 2)
    assert a.sent_at is None and b.sent_at is None and a.lease_until == b.lease_until == 1060.0
    held = await store.reserve(a, 0.01, now=1000.0, defaults=NO_CAPS, send_lease_until=1035.0)
    refused = await store.reserve(b, 0.01, now=1001.0, defaults=NO_CAPS, send_lease_until=1036.0)
    assert held == Reservation(True, None, "wait")
    assert not refused.held and "daily cap of $0.015" in str(refused.reason) and refused.on_budget == "fail"
    sent, unsent = await store.get_job(a.id), await store.get_job(b.id)
    assert sent is not None and sent.state is State.SUBMITTING and sent.lease_owner == "me"
    assert (sent.sent_at, sent.lease_until) == (1000.0, 1035.0)
    assert (sent.est_usd, sent.reserved_usd, sent.reserved_at) == (0.01, 0.01, 1000.0)
    assert unsent is not None and unsent.state is State.SUBMITTING
    assert (unsent.sent_at, unsent.lease_until, unsent.reserved_usd, unsent.reserved_at) == (None, 1060.0, None, None)
    totals = await store.spend_totals("acme", jobs[0].batch_id, at=1000.0)
    assert totals["batch"] == pytest.approx(0.01) and totals["day"] == pytest.approx(0.01)


async def test_only_the_claim_not_yet_marked_sent_can_reserve(store: Store) -> None:
    jobs = await batch(store, "acme", 1, now=100.0)
    (a,) = await claim(store, 1)
    lost = Reservation(False, "lease lost", "wait")
    stranger = msgspec.structs.replace(a, lease_owner="another submitter")
    assert await store.reserve(stranger, 0.01, now=1000.0, defaults=NO_CAPS, send_lease_until=1035.0) == lost
    assert (await store.reserve(a, 0.01, now=1001.0, defaults=NO_CAPS, send_lease_until=1036.0)).held
    # Marked once: the same claim cannot reserve (nor be sent) a second time.
    assert await store.reserve(a, 0.01, now=1002.0, defaults=NO_CAPS, send_lease_until=1037.0) == lost
    job = await store.get_job(a.id)
    assert job is not None and (job.sent_at, job.lease_until, job.reserved_at) == (1001.0, 1036.0, 1001.0)
    assert (await store.spend_totals("acme", jobs[0].batch_id, at=1001.0))["batch"] == pytest.approx(0.01)
    gone = msgspec.structs.replace(a, id="no-such-job")
    assert await store.reserve(gone, 0.01, now=1003.0, defaults=NO_CAPS, send_lease_until=1038.0) == Reservation(
        False, "job gone", "wait"
    )
