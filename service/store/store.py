"""The store: every read and write segflow makes, written once over a `Driver` per database.

Every change to a job goes through `Store.transition`: inside the write transaction the store reads
the job (and the upstream task a snapshot names), asks a pure `decide` function what to change, and
writes the change as a compare-and-set with its event-log row and, for an end state, its outbox
event. A webhook, a poll and another replica racing on one job therefore cannot both win. Claims go
the same way, so every event row is made in one place.

Writes are group-committed: callers queue transitions and other writes, one writer runs everything
queued in one transaction (transitions decided together in memory and written with `executemany`)
and answers each caller after COMMIT returned. Should a write fail, the group runs again with each
write in its own savepoint, so one bad write does not sink the others and the group still costs one
commit. After the commit the store wakes the workers the group gave work to (on PostgreSQL, every
replica's, by NOTIFY).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson

from service import spend
from service.callback_events import batch_completed_event, subscription_disabled_event
from service.jobs import (
    ArtifactRow,
    AttemptResult,
    BatchRow,
    BatchSummary,
    Change,
    ClaimedDelivery,
    DecideFn,
    DeliveryAttemptRow,
    DeliveryRow,
    DeliveryState,
    EventRow,
    ExpiredMask,
    JobInput,
    JobRow,
    OutboxEvent,
    Outcome,
    PrunedRow,
    RetentionCounts,
    SubscriptionChanges,
    SubscriptionRow,
    TaskRow,
)
from service.states import Event, State
from service.store import rows
from service.store.driver import Conn, Driver, Row, migrations
from service.wakeup import Topic

T = TypeVar("T")
R = TypeVar("R")
Op = Callable[[Conn], Awaitable[Any]]
# A queued write: (job_id, decide, task_id, future) for a transition, (None, op, None, future) else.
Pending = tuple[str | None, Any, str | None, "asyncio.Future[Any]"]
_TOPICS = {t.value: t for t in Topic}
_DELIVERY_STATES = {"delivered": DeliveryState.DELIVERED, "retry": DeliveryState.PENDING}


def _wakes(state: State) -> Topic | None:
    if state is State.QUEUED:
        return Topic.SUBMIT
    if state is State.FETCHING:
        return Topic.FETCH
    return Topic.DELIVER if state.is_terminal else None  # its event is in the outbox


@dataclass(frozen=True, slots=True)
class Reservation:
    held: bool  # the estimate is reserved: the create may go out
    reason: str | None  # why not
    on_budget: str  # what the job's batch wants done when a cap holds it back: "wait" or "fail"


@dataclass(frozen=True, slots=True)
class AccountState:
    """The balance guard's last word, shared by every replica through the store."""

    paused: bool
    reason: str | None
    balance_usd: float | None
    checked_at: float


class StoreError(Exception):
    """The store cannot make a write durable right now (the caller answers 503 and retries)."""


class IdempotencyConflict(Exception):
    """An Idempotency-Key was reused with a different request body."""


class _Isolate(Exception):
    """A write of the group failed: run the group again, each write in its own savepoint."""


class Store:
    """Everything segflow reads and writes, on SQLite or PostgreSQL."""

    def __init__(self, driver: Driver, *, group_commit_max: int = 256) -> None:
        self.driver = driver
        self._max = group_commit_max
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._topics: set[Topic] = set()
        self._on_topic: Callable[[Topic], None] | None = None

    # lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self.driver.open()
            await self.driver.migrate(migrations(self.driver.dialect))
        except Exception as exc:
            if self.driver.unavailable(exc):
                raise StoreError(f"cannot reach the database: {type(exc).__name__}") from None
            raise
        self._writer = asyncio.create_task(self._writer_loop(), name="store-group-commit")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._writer:
            await self._writer
        await self.driver.close()

    async def ping(self) -> None:
        await self._read(lambda c: c.fetchrow("select_key", ""))

    async def listen(self, on_topic: Callable[[Topic], None]) -> None:
        """Wake this process's workers after every commit that gives them work (and, on PostgreSQL,
        after any other replica's: its NOTIFY is relayed, and every topic after a reconnect)."""
        self._on_topic = on_topic

        def relay(payload: str) -> None:
            for topic in [_TOPICS[payload]] if payload in _TOPICS else list(Topic) if not payload else []:
                on_topic(topic)

        await self.driver.listen(relay)

    # reads and the group committer ---------------------------------------------------------

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if self._closed or self._writer is None:
            raise StoreError("store is closed")
        try:
            return await self.driver.read(fn)
        except Exception as exc:
            if self.driver.unavailable(exc):
                raise StoreError(f"database unavailable: {type(exc).__name__}") from None
            raise

    async def _queue(self, item: Pending) -> Any:
        if self._closed or self._writer is None:
            raise StoreError("store is closed")
        self._pending.append(item)
        self._wake.set()
        return await item[3]

    async def _write(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `op` in the next group's transaction."""
        result: T = await self._queue((None, op, None, asyncio.get_running_loop().create_future()))
        return result

    async def transition(self, job_id: str, decide: DecideFn, *, task_id: str | None = None) -> Outcome:
        outcome: Outcome = await self._queue((job_id, decide, task_id, asyncio.get_running_loop().create_future()))
        return outcome

    async def _writer_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group = self._pending[: self._max]
                del self._pending[: self._max]
                await self._commit(group)
            if self._closed and not self._pending:
                return

    async def _commit(self, group: list[Pending]) -> None:
        try:
            try:
                results = await self._attempt(group, isolate=False)
            except _Isolate:
                results = await self._attempt(group, isolate=True)
        except Exception as exc:  # noqa: BLE001 - COMMIT failed or the database is gone: nobody is answered yes
            failure = StoreError(f"commit failed: {type(exc).__name__}: {exc}")
            for *_, fut in group:
                if not fut.done():
                    fut.set_exception(failure)
            return
        for (*_, fut), (ok, value) in zip(group, results, strict=True):
            if not fut.done():
                fut.set_result(value) if ok else fut.set_exception(value)
        if self._on_topic is not None:
            for topic in self._topics:
                self._on_topic(topic)

    async def _attempt(self, group: list[Pending], *, isolate: bool) -> list[tuple[bool, Any]]:
        """The group in one transaction: other writes first, then every transition together."""
        results: list[tuple[bool, Any]] = [(False, None)] * len(group)
        self._topics = set()
        return await self.driver.write(partial(self._in_transaction, group, results, isolate))

    async def _in_transaction(
        self, group: list[Pending], results: list[tuple[bool, Any]], isolate: bool, tx: Conn
    ) -> list[tuple[bool, Any]]:
        moves = []
        for i, (job_id, op, _task_id, _fut) in enumerate(group):
            if job_id is None:
                results[i] = await self._isolated(tx, isolate, op)
            else:
                moves.append(i)
        if moves:
            items = [group[i] for i in moves]
            ok, done = await self._isolated(tx, isolate, partial(self._transitions, items=items))
            if not ok:  # one transition's SQL failed the group: each on its own
                alone = [await self._isolated(tx, True, partial(self._transitions, items=[t])) for t in items]
                done = [r[1][0] if r[0] else r for r in alone]
            for i, result in zip(moves, done, strict=True):
                results[i] = result
        if self._topics and self.driver.shared:
            for topic in sorted(self._topics):
                await tx.execute("notify", topic.value)
        return results

    async def _isolated(self, tx: Conn, isolate: bool, op: Op) -> tuple[bool, Any]:
        try:
            if not isolate:
                return (True, await op(tx))
            async with tx.savepoint():
                return (True, await op(tx))
        except Exception as exc:
            if self.driver.unavailable(exc):
                raise
            if not isolate:
                raise _Isolate from exc
            return (False, exc)

    async def _transitions(self, tx: Conn, items: Sequence[Pending]) -> list[tuple[bool, Any]]:
        ids = sorted({job_id for job_id, *_ in items if job_id is not None})
        found = await tx.fetch("lock_jobs", ids)
        task_ids = sorted({t for _, _, t, _ in items if t})
        tasks = {r["task_id"]: rows.task(r) for r in await tx.fetch("select_tasks", task_ids)} if task_ids else {}
        gp = rows.plan_group([(j, d, t) for j, d, t, _ in items if j is not None], found, tasks, time.time())
        await self._save(tx, gp)
        return gp.results

    async def _claim(
        self, tx: Conn, query: str, args: Sequence[Any], change: Callable[[JobRow], Change]
    ) -> list[JobRow]:
        """Claim the jobs `query` finds (locked, on PostgreSQL) through the transition path."""
        found = await tx.fetch(query, *args)
        group = [(r["id"], (lambda job, _t: change(job) if job else None), None) for r in found]
        gp = rows.plan_group(group, found, {}, args[0])
        await self._save(tx, gp)
        return list(gp.changed.values())

    async def _save(self, tx: Conn, gp: rows.GroupPlan) -> None:
        """Write a planned group: jobs, tasks, events, artifacts, and the outbox of its end states."""
        await tx.executemany("update_job", gp.updates)
        await tx.executemany("upsert_task", gp.tasks.values())
        await tx.executemany("insert_event", gp.events)
        await tx.executemany("insert_artifact", gp.artifacts)
        # Spend totals move with the job rows that move them (reservations, releases, prices).
        await tx.executemany("add_spend", [(scope, key, usd) for (scope, key), usd in sorted(gp.spend.items())])
        if gp.outbox:
            # Job events have fresh ids: insert and fan out together. A batch's completion has an id
            # derived from the batch, so a second try (another replica, a replay) writes nothing.
            await tx.executemany("insert_outbox", [rows.outbox(e) for e in gp.outbox])
            await tx.executemany("fan_out", [(e.id, gp.now, e.batch_id, e.tenant, e.type) for e in gp.outbox])
            # A batch's completion joins the trace of the job that completed it.
            last = {(e.batch_id, e.tenant): e.trace_context for e in gp.outbox}
            for (batch_id, tenant), trace_context in sorted(last.items()):
                if await self._count(tx, "live_in_batch", batch_id) == 0:
                    counts, spend, _ = rows.counts(await tx.fetch("batches_counts", [batch_id]))[batch_id]
                    done = batch_completed_event(tenant, batch_id, counts, spend, gp.now, trace_context)
                    await self._emit(tx, done)
        self._topics.update(t for s in gp.entered if (t := _wakes(s)) is not None)

    async def _emit(self, tx: Conn, event: OutboxEvent) -> None:
        if await tx.execute("insert_outbox", *rows.outbox(event)):
            await tx.execute("fan_out", event.id, event.created_at, event.batch_id, event.tenant, event.type)

    async def _all(self, decode: Callable[[Row], R], query: str, *args: Any) -> list[R]:
        return [decode(r) for r in await self._read(lambda c: c.fetch(query, *args))]

    async def _one(self, decode: Callable[[Row], R], query: str, *args: Any) -> R | None:
        row = await self._read(lambda c: c.fetchrow(query, *args))
        return decode(row) if row is not None else None

    @staticmethod
    async def _count(c: Conn, query: str, *args: Any) -> int:
        row = await c.fetchrow(query, *args)
        assert row is not None  # a count is always one row
        return int(row["n"])

    # API keys ------------------------------------------------------------------------------

    async def add_api_key(self, tenant: str, key_hash: str, label: str) -> None:
        await self._write(lambda c: c.execute("insert_key", key_hash, tenant, label, time.time()))

    async def tenant_for_key(self, key_hash: str) -> str | None:
        return await self._one(lambda r: str(r["tenant"]), "select_key", key_hash)

    # quotas --------------------------------------------------------------------------------

    async def add_usage(self, tenant: str, kind: str, window_start: float, amount: int, limit: int) -> int | None:
        """Add `amount` to the tenant's usage of `kind` in the window starting at `window_start`,
        atomically and only if the total stays within `limit`: the new total, or None (nothing
        added). That kind's earlier windows are deleted."""
        if amount > limit:
            return None

        async def op(c: Conn) -> int | None:
            await c.execute("prune_usage", tenant, kind, window_start)
            row = await c.fetchrow("add_usage", tenant, kind, window_start, amount, limit)
            return int(row["amount"]) if row is not None else None

        return await self._write(op)

    async def open_jobs(self, tenant: str) -> int:
        """The tenant's jobs accepted and not yet finished."""
        return await self._read(lambda c: self._count(c, "open_jobs", tenant))

    # batches -------------------------------------------------------------------------------

    async def create_batch(
        self,
        tenant: str,
        items: Sequence[JobInput],
        *,
        callback_url: str | None,
        idempotency_key: str | None,
        request_hash: str,
        now: float,
        max_spend_usd: float | None = None,
        on_budget: str = "wait",
    ) -> tuple[BatchRow, list[JobRow], bool]:
        async def existing(c: Conn) -> tuple[BatchRow, list[JobRow], bool] | None:
            found = await c.fetchrow("select_batch_by_key", tenant, idempotency_key)
            if found is None:
                return None
            batch = rows.record(BatchRow, found)
            if batch.request_hash != request_hash:
                raise IdempotencyConflict(str(idempotency_key))
            return batch, [rows.job(r) for r in await c.fetch("batch_jobs", batch.id, -1, batch.total)], False

        async def create(c: Conn) -> tuple[BatchRow, list[JobRow], bool]:
            if idempotency_key is not None and (hit := await existing(c)) is not None:
                return hit
            fields = (callback_url, idempotency_key, request_hash, len(items), now, max_spend_usd, on_budget)
            batch = BatchRow(str(uuid.uuid4()), tenant, *fields)
            await c.execute("insert_batch", *rows.params(batch))
            jobs = [rows.new_job(str(uuid.uuid4()), batch, seq, item, now) for seq, item in enumerate(items)]
            await c.executemany("insert_job", jobs)
            await c.executemany("insert_event", [(j[0], now, "accepted", "", "queued", "api", None) for j in jobs])
            self._topics.add(Topic.SUBMIT)
            return batch, [rows.job(r) for r in await c.fetch("batch_jobs", batch.id, -1, len(items))], True

        try:
            return await self._write(create)
        except self.driver.integrity_error:
            # Another replica committed the same Idempotency-Key first: answer with its batch.
            hit = await self._read(existing)
            if hit is None:
                raise
            return hit

    async def get_batch(self, batch_id: str) -> BatchRow | None:
        return await self._one(partial(rows.record, BatchRow), "select_batch", batch_id)

    async def batch_summary(self, batch_id: str) -> BatchSummary | None:
        async def fn(c: Conn) -> BatchSummary | None:
            row = await c.fetchrow("select_batch", batch_id)
            if row is None:
                return None
            return rows.summaries([rows.record(BatchRow, row)], await c.fetch("batches_counts", [batch_id]))[0]

        return await self._read(fn)

    async def list_batch_jobs(self, batch_id: str, *, state: State | None, after_seq: int, limit: int) -> list[JobRow]:
        if state is None:
            return await self._all(rows.job, "batch_jobs", batch_id, after_seq, limit)
        return await self._all(rows.job, "batch_jobs_in_state", batch_id, after_seq, limit, state.value)

    async def list_batches(self, tenant: str, *, before: tuple[float, str] | None, limit: int) -> list[BatchSummary]:
        """The tenant's batches with their progress, newest first, older than `before`
        (created_at, id) when given."""
        created_before, id_before = before or (math.inf, "")

        async def fn(c: Conn) -> list[BatchSummary]:
            found = await c.fetch("tenant_batches", tenant, created_before, id_before, limit)
            batches = [rows.record(BatchRow, r) for r in found]
            if not batches:
                return []
            return rows.summaries(batches, await c.fetch("batches_counts", [b.id for b in batches]))

        return await self._read(fn)

    # jobs ----------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRow | None:
        return await self._one(rows.job, "select_job", job_id)

    async def job_tasks(self, job_id: str) -> list[TaskRow]:
        return await self._all(rows.task, "job_tasks", job_id)

    async def job_events(self, job_id: str) -> list[EventRow]:
        return await self._all(rows.event, "job_events", job_id)

    async def job_artifacts(self, job_id: str) -> list[ArtifactRow]:
        return await self._all(partial(rows.record, ArtifactRow), "job_artifacts", job_id)

    # work claims ---------------------------------------------------------------------------

    async def claim_queued(
        self,
        owner: str,
        *,
        now: float,
        limit: int,
        max_in_flight: int,
        lease_s: float,
        max_fetch_backlog: int = 0,
        tenant_max_in_flight: int = 0,
    ) -> list[JobRow]:
        """Move up to `limit` queued jobs to `submitting`, leased to `owner`, shared fairly across
        tenants (see `claim_queued` in the SQL): none while `max_in_flight` jobs may have a task
        alive upstream, or while `max_fetch_backlog` jobs wait for their mask, and none of a tenant
        with `tenant_max_in_flight` jobs in flight (0: no such limit)."""
        lease = {"lease_owner": owner, "lease_until": now + lease_s}
        per_tenant = tenant_max_in_flight or 2**31 - 1

        async def claim(c: Conn) -> list[JobRow]:
            await c.execute("lock_claims")
            room = min(limit, max_in_flight - await self._count(c, "count_in_flight"))
            if room > 0 and max_fetch_backlog:
                room = min(room, max_fetch_backlog - await self._count(c, "count_fetching"))
            if room <= 0:
                return []
            return await self._claim(c, "claim_queued", (now, room, per_tenant), claim_of)

        def claim_of(job: JobRow) -> Change:
            return Change(Event.CLAIM, "submitter", lease, detail={"attempt": job.attempt})

        return await self._write(claim)

    async def reserve(
        self,
        claimed: JobRow,
        estimate: float,
        *,
        now: float,
        defaults: spend.Caps,
        send_lease_until: float,
        hold_s: float = 30.0,
    ) -> Reservation:
        """Hold `estimate` against the caps of the claimed job's batch and tenant and, in the same
        write, mark the job's create as about to go out (`sent_at` = `now`, the lease extended to
        `send_lease_until`); or say which cap it would pass, leaving the job unmarked. Only a job
        so marked can have a task it does not know of (a lapsed claim without the mark goes back to
        `queued`), so the caller sends the create at once after a held reservation, and never
        without one. Held only while the job is still the claim (same attempt and lease owner, in
        `submitting`, not yet marked): else "lease lost".

        Runs under the claimers' lock (`lock_claims`: PostgreSQL's advisory lock, SQLite's one
        writer), so no two reservations, on any replica, read the same totals. A refusal for a
        batch that waits also holds that cap's other queued jobs back for `hold_s` (the batch's, or
        the tenant's in waiting batches), so they are not claimed one by one only to be refused again."""
        held = Change(
            None,
            "submitter",
            {
                "est_usd": estimate,
                "reserved_usd": estimate,
                "reserved_at": now,
                "sent_at": now,
                "lease_until": send_lease_until,
            },
        )

        def decide(job: JobRow | None, _t: TaskRow | None) -> Change | None:
            if job is None or job.state is not State.SUBMITTING or job.attempt != claimed.attempt:
                return None
            return held if job.lease_owner == claimed.lease_owner and not job.sent_at else None

        async def op(c: Conn) -> Reservation:
            await c.execute("lock_claims")
            _, day, month = spend.keys(claimed.tenant, claimed.batch_id, now)
            found = await c.fetch("reserve_job", claimed.id, day[1], month[1])
            if not found:
                return Reservation(False, "job gone", "wait")
            r = found[0]
            caps = spend.Caps(
                r["batch_max_usd"],
                spend.tightest(defaults.daily_usd, r["tenant_daily_usd"]),
                spend.tightest(defaults.monthly_usd, r["tenant_monthly_usd"]),
            )
            spent = {scope: r[f"spent_{scope}"] for scope in ("batch", "day", "month")}
            totals = {scope: float(usd) for scope, usd in spent.items() if usd is not None}
            refused = spend.refusal(caps, totals, estimate)
            if refused is not None:
                scope, why = refused
                on_budget = str(r["batch_on_budget"])
                if on_budget == "wait":
                    hold = "hold_batch" if scope == "batch" else "hold_tenant"
                    key = claimed.batch_id if scope == "batch" else claimed.tenant
                    await c.execute(hold, now + hold_s, why[:500], key)
                return Reservation(False, why, on_budget)
            gp = rows.plan_group([(claimed.id, decide, None)], found, {}, now)
            await self._save(c, gp)
            return Reservation(claimed.id in gp.changed, None if claimed.id in gp.changed else "lease lost", "wait")

        return await self._write(op)

    async def claim_fetching(self, owner: str, *, now: float, limit: int, lease_s: float) -> list[JobRow]:
        lease = Change(None, "fetcher", {"lease_owner": owner, "lease_until": now + lease_s})
        return await self._write(lambda c: self._claim(c, "claim_fetching", (now, limit), lambda _j: lease))

    async def claim_due(self, *, now: float, limit: int, hold_s: float) -> list[JobRow]:
        hold = Change(None, "reconciler", {"next_check_at": now + hold_s})
        return await self._write(lambda c: self._claim(c, "claim_due", (now, limit), lambda _j: hold))

    async def stale_leases(self, *, now: float, limit: int) -> list[JobRow]:
        return await self._all(rows.job, "stale_leases", now, limit)

    async def aged_jobs(self, *, cutoff: float, limit: int) -> list[JobRow]:
        return await self._all(rows.job, "aged_jobs", cutoff, limit)

    # recovery: what the upstream's history is checked against, and the observed timings --------

    async def known_task_ids(self, task_ids: Sequence[str]) -> set[str]:
        """The ids among `task_ids` of upstream tasks segflow has recorded."""
        if not task_ids:
            return set()
        return set(await self._all(lambda r: str(r["task_id"]), "known_task_ids", sorted(set(task_ids))))

    async def recent_timings(self, *, limit: int) -> tuple[list[float], list[float]]:
        """The latest `limit` run times (upstream clock) and create-to-final-webhook delays."""
        runs = await self._all(lambda r: float(r["s"]), "recent_run_times", limit)
        heard = await self._all(lambda r: float(r["s"]), "recent_heard_after", limit)
        return runs, heard

    # spend -----------------------------------------------------------------------------------

    async def spend_totals(self, tenant: str, batch_id: str, *, at: float) -> dict[str, float]:
        """The committed spend (settled plus reserved) of a batch and of the tenant's day and month
        around `at`, by scope."""
        keys = spend.keys(tenant, batch_id, at)
        found = await self._all(lambda r: (str(r["scope"]), float(r["usd"])), "select_spend", *(k for _, k in keys))
        return {scope: 0.0 for scope, _ in keys} | dict(found)

    async def tenant_budget(self, tenant: str) -> tuple[float | None, float | None]:
        """The tenant's own (daily, monthly) caps, None where it has set none."""
        row = await self._one(lambda r: (r["daily_usd"], r["monthly_usd"]), "select_tenant_budget", tenant)
        return row or (None, None)

    async def set_tenant_budget(self, tenant: str, daily_usd: float | None, monthly_usd: float | None) -> None:
        await self._write(lambda c: c.execute("upsert_tenant_budget", tenant, daily_usd, monthly_usd, time.time()))

    async def account_state(self) -> AccountState | None:
        return await self._one(
            lambda r: AccountState(bool(r["paused"]), r["reason"], r["balance_usd"], r["checked_at"]),
            "select_account_state",
        )

    async def set_account_state(self, state: AccountState) -> None:
        args = (state.paused, state.reason, state.balance_usd, state.checked_at)
        await self._write(lambda c: c.execute("upsert_account_state", *args))

    # figures -------------------------------------------------------------------------------

    async def job_counts(self) -> Mapping[str, int]:
        return dict(await self._all(lambda r: (r["state"], int(r["n"])), "job_counts"))

    async def gauge_counts(self) -> Mapping[str, float]:
        """Jobs per live state, deliveries pending and dead, and the oldest live job's created_at,
        each through a partial index: cheap at every /metrics scrape however many jobs are stored."""

        async def fn(c: Conn) -> Mapping[str, float]:
            others = await c.fetchrow("gauge_others")
            assert others is not None  # counts are always one row
            return rows.gauge_counts(await c.fetch("gauge_jobs"), others)

        return await self._read(fn)

    async def flow_counts(self) -> Mapping[str, int]:
        counts = await self._one(lambda r: {k: int(r[k] or 0) for k in r.keys()}, "flow_counts")  # noqa: SIM118 - a Record iterates values
        return counts or {}

    # callbacks: subscriptions, the outbox and its deliveries --------------------------------

    async def add_subscription(self, sub: SubscriptionRow, *, max_per_tenant: int = 0) -> bool:
        """False (nothing added) when the tenant already has `max_per_tenant` enabled ones (0: no limit)."""
        p = rows.params(dataclasses.replace(sub, event_types=orjson.dumps(list(sub.event_types)).decode()))  # type: ignore[arg-type]

        async def op(c: Conn) -> bool:
            await c.execute("lock_tenant_subscriptions", sub.tenant)
            if max_per_tenant:
                found = await c.fetchrow("count_subscriptions", sub.tenant)
                if found is not None and int(found["n"]) >= max_per_tenant:
                    return False
            await c.execute("insert_subscription", *p)
            return True

        return await self._write(op)

    async def list_subscriptions(self, tenant: str) -> list[SubscriptionRow]:
        return await self._all(rows.subscription, "tenant_subscriptions", tenant)

    async def get_subscription(self, sub_id: str) -> SubscriptionRow | None:
        return await self._one(rows.subscription, "select_subscription", sub_id)

    async def delete_subscription(self, tenant: str, sub_id: str) -> bool:
        """Disable (never delete: its deliveries stay visible) and stop its pending deliveries."""

        async def op(c: Conn) -> bool:
            if await c.fetchrow("owned_subscription", sub_id, tenant) is None:
                return False
            await self._disable(c, sub_id, "deleted", time.time())
            return True

        return await self._write(op)

    async def update_subscription(self, sub_id: str, changes: SubscriptionChanges) -> SubscriptionRow | None:
        """Apply a PATCH (a new URL also moves the subscription's pending deliveries)."""

        types = None if changes.event_types is None else orjson.dumps(list(changes.event_types)).decode()

        async def op(c: Conn) -> SubscriptionRow | None:
            if changes.url is not None:
                await c.execute("move_pending_deliveries", changes.url, sub_id)
            row = await c.fetchrow("update_subscription", changes.url, types, changes.paused, sub_id)
            return rows.subscription(row) if row is not None else None

        return await self._write(op)

    async def rotate_subscription_secret(self, sub_id: str, *, now: float, overlap_s: float) -> SubscriptionRow | None:
        """A new secret generation; the previous one also signs until `now + overlap_s`."""

        async def op(c: Conn) -> SubscriptionRow | None:
            await c.execute("rotate_subscription_secret", now + overlap_s, sub_id)
            row = await c.fetchrow("select_subscription", sub_id)
            return rows.subscription(row) if row is not None else None

        return await self._write(op)

    async def add_test_event(self, event: OutboxEvent, sub: SubscriptionRow, *, now: float) -> None:
        """An example event delivered to this one subscription only."""

        async def op(c: Conn) -> None:
            await c.execute("insert_outbox", *rows.outbox(event))
            await c.execute("insert_test_delivery", event.id, sub.id, sub.url, sub.asymmetric, now)

        await self._write(op)

    async def _disable(self, c: Conn, sub_id: str, reason: str, now: float) -> None:
        await c.execute("disable_subscription", now, reason, sub_id)
        await c.execute("kill_pending_of_subscription", now, sub_id)

    async def list_events(
        self, tenant: str, *, since: float, limit: int, type: str | None = None, before: tuple[float, str] | None = None
    ) -> list[OutboxEvent]:
        """Newest first; `before` is the (created_at, id) of the last event already seen."""
        at, last = before if before else (None, None)
        return await self._all(partial(rows.record, OutboxEvent), "tenant_events", tenant, since, limit, at, last, type)

    async def get_event(self, event_id: str) -> OutboxEvent | None:
        return await self._one(partial(rows.record, OutboxEvent), "select_outbox", event_id)

    async def event_deliveries(self, event_id: str) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
        async def fn(c: Conn) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
            out = []
            for d in [rows.delivery(r) for r in await c.fetch("event_deliveries", event_id)]:
                attempts = await c.fetch("delivery_attempts", d.id)
                out.append((d, [rows.record(DeliveryAttemptRow, a) for a in attempts]))
            return out

        return await self._read(fn)

    async def claim_deliveries(
        self, owner: str, *, now: float, limit: int, lease_s: float, per_endpoint: int
    ) -> list[ClaimedDelivery]:
        async def op(c: Conn) -> list[ClaimedDelivery]:
            await c.execute("lock_deliveries")
            out = []
            for d in map(
                rows.delivery, await c.fetch("claim_deliveries", owner, now + lease_s, now, limit, per_endpoint)
            ):
                event = await c.fetchrow("select_outbox", d.event_id)
                assert event is not None  # deliveries reference the outbox
                signing = await c.fetchrow("select_signing", d.target) if d.target != "batch" else None
                version, previous_until = (
                    (signing["secret_version"], signing["previous_secret_until"]) if signing else (0, None)
                )
                out.append(
                    ClaimedDelivery(
                        d,
                        event["payload"],
                        event["tenant"],
                        secret_version=version,
                        previous_secret_until=previous_until,
                        trace_context=event["trace_context"],
                    )
                )
            return out

        return await self._write(op)

    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> str | None:
        """Record the attempt; why it disabled the subscription ("gone": 410, "failing": failing
        for `disable_after_s`), or None. A disabled subscription says so with subscription.disabled."""
        n = delivery.attempts + 1
        state = _DELIVERY_STATES.get(result.outcome, DeliveryState.DEAD)
        finished, next_at = (None if state is DeliveryState.PENDING else now), result.next_at or now
        is_sub = delivery.target != "batch"

        async def op(c: Conn) -> str | None:
            await c.execute("insert_attempt", delivery.id, n, now, result.status, result.duration_ms, result.error)
            await c.execute("finish_delivery", n, state, next_at, result.status, result.error, finished, delivery.id)
            if result.slow_down_s is not None:
                await c.execute("slow_down_endpoint", delivery.origin, now, result.slow_down_s, result.slow_down_max_s)
            if result.outcome == "delivered":
                await c.execute("forget_slow_down", delivery.origin)
                if is_sub:
                    await c.execute("subscription_healthy", delivery.target)
                return None
            if not is_sub:
                return None
            row = await c.fetchrow("subscription_failing", now, delivery.target)
            sub = rows.subscription(row) if row is not None else None
            if sub is None:  # already disabled
                return None
            limit = result.disable_after_s
            if result.outcome == "gone":
                why, reason = "gone", "endpoint answered 410 Gone"
            elif limit is not None and sub.failing_since is not None and now - sub.failing_since >= limit:
                why, reason = "failing", f"failing for {limit / 86400:g} days"
            else:
                return None
            await self._disable(c, sub.id, reason, now)
            await self._emit(
                c, subscription_disabled_event(sub.tenant, sub.id, sub.url, reason, sub.failing_since, now)
            )
            return why

        return await self._write(op)

    async def replay_event(self, event_id: str, *, now: float, everything: bool = False) -> int:
        """Queue again the event's dead (and failing) deliveries; `everything`: delivered ones too."""
        return await self._write(lambda c: c.execute("replay_event", now, event_id, everything))

    async def replay_subscription(self, sub_id: str, *, since: float, now: float, everything: bool = False) -> int:
        return await self._write(lambda c: c.execute("replay_subscription", now, sub_id, everything, since))

    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]:
        return await self._all(rows.delivery, "dead_deliveries", tenant, limit)

    # retention (the pruner): small batches, each one write of the group commit ---------------

    async def pruned_job(self, job_id: str) -> PrunedRow | None:
        return await self._one(partial(rows.record, PrunedRow), "pruned_job", job_id)

    async def pruned_batch(self, batch_id: str) -> PrunedRow | None:
        return await self._one(partial(rows.record, PrunedRow), "pruned_batch", batch_id)

    async def pruned_masks(self, job_id: str) -> dict[int, float]:
        """Mask index -> when its object was deleted, for the job's pruned masks."""
        found = await self._read(lambda c: c.fetch("pruned_masks_of_job", job_id))
        return {int(r["idx"]): float(r["pruned_at"]) for r in found}

    async def expired_masks(self, *, cutoff: float, limit: int) -> list[ExpiredMask]:
        """Stored masks written before `cutoff` whose object is not yet deleted, oldest first."""

        async def fn(c: Conn) -> list[ExpiredMask]:
            mark = await c.fetchrow("masks_watermark")
            since = float(mark["mark"]) if mark is not None else 0.0
            return [rows.record(ExpiredMask, r) for r in await c.fetch("expired_masks", since, cutoff, limit)]

        return await self._read(fn)

    async def mark_masks_pruned(self, masks: Sequence[ExpiredMask], *, now: float) -> None:
        params = [(m.job_id, m.idx, m.created_at, now) for m in masks]
        await self._write(lambda c: c.executemany("insert_pruned_mask", params))

    async def expired_jobs(self, *, cutoff: float, limit: int) -> tuple[list[str], list[str]]:
        """(ids, mask paths not yet deleted) of final jobs that finished before `cutoff`."""

        async def fn(c: Conn) -> tuple[list[str], list[str]]:
            ids = [r["id"] for r in await c.fetch("expired_jobs", cutoff, limit)]
            paths = [r["path"] for r in await c.fetch("unpruned_masks_of_jobs", ids)] if ids else []
            return ids, paths

        return await self._read(fn)

    async def delete_jobs(self, job_ids: Sequence[str], *, cutoff: float, now: float) -> int:
        """Delete those still expired (and not held by another transaction) with their attempts,
        events and artifact rows, leaving a tombstone each."""

        async def op(c: Conn) -> int:
            still = [r["id"] for r in await c.fetch("still_expired_jobs", list(job_ids), cutoff)]
            if not still:
                return 0
            for statement in (
                "delete_job_events",
                "delete_job_tasks",
                "delete_job_artifacts",
                "delete_job_pruned_masks",
            ):
                await c.execute(statement, still)
            await c.execute("tombstone_jobs", still, now)
            return await c.execute("delete_jobs_by_id", still)

        return await self._write(op)

    async def delete_empty_batches(self, *, cutoff: float, limit: int, now: float) -> int:
        async def op(c: Conn) -> int:
            ids = [r["id"] for r in await c.fetch("empty_batches", cutoff, limit)]
            if not ids:
                return 0
            await c.execute("tombstone_batches", ids, now)
            return await c.execute("delete_batches_by_id", ids)

        return await self._write(op)

    async def delete_outbox(self, *, cutoff: float, limit: int) -> int:
        """Delete events created before `cutoff` that nothing is delivering, with their deliveries
        and attempts."""

        async def op(c: Conn) -> int:
            ids = [r["id"] for r in await c.fetch("expired_outbox", cutoff, limit)]
            if not ids:
                return 0
            deliveries = [r["id"] for r in await c.fetch("finished_deliveries_of", ids)]
            if deliveries:
                await c.execute("delete_delivery_attempts", deliveries)
                await c.execute("delete_deliveries_by_id", deliveries)
            return await c.execute("delete_outbox_events", ids)

        return await self._write(op)

    async def live_input_images(self) -> list[str]:
        """Image URLs naming an uploaded input (`/inputs/`) of jobs not yet final."""
        return [r["image"] for r in await self._read(lambda c: c.fetch("live_input_images"))]

    async def retention_counts(
        self, *, masks_cutoff: float | None, jobs_cutoff: float | None, outbox_cutoff: float | None
    ) -> RetentionCounts:
        async def fn(c: Conn) -> RetentionCounts:
            masks = mask_bytes = jobs = events = outbox = 0
            if masks_cutoff is not None:
                mark = await c.fetchrow("masks_watermark")
                found = await c.fetchrow("count_expired_masks", float(mark["mark"]) if mark else 0.0, masks_cutoff)
                assert found is not None
                masks, mask_bytes = int(found["n"]), int(found["bytes"])
            if jobs_cutoff is not None:
                jobs = await self._count(c, "count_expired_jobs", jobs_cutoff)
                events = await self._count(c, "count_expired_events", jobs_cutoff)
            if outbox_cutoff is not None:
                outbox = await self._count(c, "count_expired_outbox", outbox_cutoff)
            return RetentionCounts(masks, mask_bytes, jobs, events, outbox)

        return await self._read(fn)
