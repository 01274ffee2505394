"""The PostgreSQL side of outbound callbacks (the same behaviour as sqlite_callbacks.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
import asyncpg.pool
import orjson

from service.callback_events import OutboxEvent, batch_completed_event, subscription_disabled_event
from service.states import TERMINAL
from service.store import rows
from service.store.base import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryAttemptRow,
    DeliveryRow,
    OutboxRow,
    SubscriptionChanges,
    SubscriptionRow,
)

T = TypeVar("T")
# Pooled connections are proxies; the listener holds a plain connection.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
_TERMINAL = ", ".join(f"'{s.value}'" for s in TERMINAL)
_DELIVERY_COLS = (
    "id, event_id, target, url, signer, ed25519, state, attempts, next_at, last_status, last_error, "
    "created_at, finished_at, origin"
)
_OUTBOX_COLS = "id, tenant, type, batch_id, job_id, payload, created_at"
_SUB_COLS = (
    "id, tenant, url, event_types, ed25519, created_at, disabled_at, disabled_reason, "
    "paused, secret_version, previous_secret_until, failing_since"
)

INSERT_OUTBOX = f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
FAN_OUT = """
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
SELECT $1::text, 'batch', b.callback_url, 'tenant:' || b.tenant, false, 'pending', $2::float8, $2::float8,
       segflow_origin(b.callback_url)
  FROM batches b WHERE b.id = $3 AND b.callback_url IS NOT NULL
UNION ALL
SELECT $1::text, s.id, s.url, s.id, s.ed25519, 'pending', $2::float8, $2::float8, segflow_origin(s.url)
  FROM subscriptions s
 WHERE s.tenant = $4 AND s.disabled_at IS NULL
   AND (s.event_types = '[]' OR s.event_types::jsonb ? $5::text)
ON CONFLICT DO NOTHING
"""
INSERT_TEST_DELIVERY = """
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
VALUES ($1, $2, $3, $2, $4, 'pending', $5, $5, segflow_origin($3))
"""
LIVE_IN_BATCH = f"SELECT count(*) FROM jobs WHERE batch_id = $1 AND state NOT IN ({_TERMINAL})"
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = $1 GROUP BY state"
# Due deliveries, at most `per_endpoint` in flight per origin (counting leases held anywhere),
# none to an origin pausing, none of a paused subscription. A window function cannot be combined
# with FOR UPDATE, so claimers take turns on an advisory lock.
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(727002)"
CLAIM = f"""
UPDATE deliveries SET lease_owner = $1, lease_until = $2
 WHERE id IN (
   SELECT id FROM (
     SELECT d.id, d.origin, d.next_at, ROW_NUMBER() OVER (PARTITION BY d.origin ORDER BY d.next_at) AS rn
       FROM deliveries d
      WHERE d.state = 'pending' AND d.next_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
        AND NOT EXISTS (SELECT 1 FROM endpoint_backoff e WHERE e.origin = d.origin AND e.not_before > $3)
        AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.target AND s.paused)
   ) c
   WHERE c.rn + (SELECT count(*) FROM deliveries b
                  WHERE b.origin = c.origin AND b.state = 'pending' AND b.lease_until >= $3) <= $5
   ORDER BY c.next_at LIMIT $4)
RETURNING {_DELIVERY_COLS}
"""
SELECT_OUTBOX = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = $1"
SELECT_SIGNING = "SELECT secret_version, previous_secret_until FROM subscriptions WHERE id = $1"
INSERT_ATTEMPT = (
    "INSERT INTO delivery_attempts VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, n) DO UPDATE "
    "SET at = excluded.at, status = excluded.status, duration_ms = excluded.duration_ms, error = excluded.error"
)
FINISH = """
UPDATE deliveries SET attempts = $1, state = $2, next_at = $3, last_status = $4, last_error = $5,
       lease_owner = NULL, lease_until = NULL, finished_at = $6
 WHERE id = $7
"""
DISABLE_SUB = "UPDATE subscriptions SET disabled_at = $1, disabled_reason = $2 WHERE id = $3 AND disabled_at IS NULL"
KILL_PENDING_OF_SUB = (
    "UPDATE deliveries SET state = 'dead', last_error = 'subscription disabled', finished_at = $1, "
    "lease_owner = NULL, lease_until = NULL WHERE target = $2 AND state = 'pending'"
)
SLOW_DOWN = """
INSERT INTO endpoint_backoff (origin, not_before, penalty_s) VALUES ($1, $2::float8 + $3::float8, $3::float8)
ON CONFLICT (origin) DO UPDATE
   SET penalty_s = least($4::float8, greatest($3::float8, endpoint_backoff.penalty_s * 2)),
       not_before = $2::float8 + least($4::float8, greatest($3::float8, endpoint_backoff.penalty_s * 2))
"""
FORGET_SLOW_DOWN = "DELETE FROM endpoint_backoff WHERE origin = $1"
SUB_HEALTHY = "UPDATE subscriptions SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL"
SUB_FAILING = (
    "UPDATE subscriptions SET failing_since = coalesce(failing_since, $1) WHERE id = $2 AND disabled_at IS NULL "
    f"RETURNING {_SUB_COLS}"
)
_REPLAYABLE = "($3::boolean OR state = 'dead' OR (state = 'pending' AND attempts > 0))"
REPLAY_EVENT = (
    "UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, "
    f"lease_until = NULL WHERE event_id = $2 AND {_REPLAYABLE} AND (target = 'batch' OR target IN "
    "(SELECT id FROM subscriptions WHERE disabled_at IS NULL))"
)
REPLAY_SUB = (
    "UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, "
    f"lease_until = NULL WHERE target = $2 AND {_REPLAYABLE} AND created_at >= $4"
)
# Creates of one tenant take turns, so two at once cannot both pass the count.
SUB_LOCK = "SELECT pg_advisory_xact_lock(727003, hashtext($1))"
COUNT_SUBS = "SELECT count(*) FROM subscriptions WHERE tenant = $1 AND disabled_at IS NULL"
INSERT_SUB = f"INSERT INTO subscriptions ({_SUB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
MOVE_PENDING = "UPDATE deliveries SET url = $1, origin = segflow_origin($1) WHERE target = $2 AND state = 'pending'"
ROTATE = (
    "UPDATE subscriptions SET secret_version = secret_version + 1, previous_secret_until = $1 "
    "WHERE id = $2 AND disabled_at IS NULL"
)
EVENTS_NEWEST = (
    f"SELECT {_OUTBOX_COLS} FROM outbox WHERE tenant = $1 AND created_at >= $2 "
    "AND ($3::text IS NULL OR type = $3) "
    "AND ($4::float8 IS NULL OR created_at < $4 OR (created_at = $4 AND id < $5::text)) "
    "ORDER BY created_at DESC, id DESC LIMIT $6"
)


async def write_outbox(c: Conn, event: OutboxEvent, now: float) -> None:
    """Inside a job's transition: its event, its deliveries, and the batch's if it just completed."""
    await _emit(c, event, now)
    if await c.fetchval(LIVE_IN_BATCH, event.batch_id) == 0:
        counts = await c.fetch(BATCH_COUNTS, event.batch_id)
        spend = sum(float(r[2]) for r in counts)
        done = batch_completed_event(event.tenant, event.batch_id, {r[0]: int(r[1]) for r in counts}, spend, now)
        await _emit(c, done, now)


async def _emit(c: Conn, event: OutboxEvent, now: float) -> None:
    status = await c.execute(INSERT_OUTBOX, *rows.outbox_params(event))
    if status.endswith(" 1"):
        await c.execute(FAN_OUT, event.id, now, event.batch_id, event.tenant, event.type)


def _sub(row: Any) -> SubscriptionRow:
    values = list(row)
    values[3] = tuple(orjson.loads(values[3]))
    return SubscriptionRow(*values)


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(*row)


def _rowcount(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _disable(c: Conn, sub: SubscriptionRow, reason: str, now: float) -> None:
    """Disable, stop its pending deliveries, and tell the tenant (subscription.disabled)."""
    await c.execute(DISABLE_SUB, now, reason, sub.id)
    await c.execute(KILL_PENDING_OF_SUB, now, sub.id)
    await _emit(c, subscription_disabled_event(sub.tenant, sub.id, sub.url, reason, sub.failing_since, now), now)


class PostgresCallbacks:
    """Mixed into PostgresStore: callback queries over its pool."""

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def add_subscription(self, sub: SubscriptionRow, *, max_per_tenant: int = 0) -> bool:
        types = orjson.dumps(list(sub.event_types)).decode()

        async def op(c: Conn) -> bool:
            await c.execute(SUB_LOCK, sub.tenant)
            if max_per_tenant and await c.fetchval(COUNT_SUBS, sub.tenant) >= max_per_tenant:
                return False
            await c.execute(
                INSERT_SUB,
                sub.id,
                sub.tenant,
                sub.url,
                types,
                sub.asymmetric,
                sub.created_at,
                sub.disabled_at,
                sub.disabled_reason,
                sub.paused,
                sub.secret_version,
                sub.previous_secret_until,
                sub.failing_since,
            )
            return True

        return await self._tx(op)

    async def list_subscriptions(self, tenant: str) -> list[SubscriptionRow]:
        sql = f"SELECT {_SUB_COLS} FROM subscriptions WHERE tenant = $1 ORDER BY created_at"
        return [_sub(r) for r in await self._read(lambda c: c.fetch(sql, tenant))]

    async def get_subscription(self, sub_id: str) -> SubscriptionRow | None:
        row = await self._read(lambda c: c.fetchrow(f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = $1", sub_id))
        return _sub(row) if row else None

    async def delete_subscription(self, tenant: str, sub_id: str) -> bool:
        async def op(c: Conn) -> bool:
            if not await c.fetchval("SELECT 1 FROM subscriptions WHERE id = $1 AND tenant = $2", sub_id, tenant):
                return False
            now = time.time()
            await c.execute(DISABLE_SUB, now, "deleted", sub_id)
            await c.execute(KILL_PENDING_OF_SUB, now, sub_id)
            return True

        return await self._tx(op)

    async def update_subscription(self, sub_id: str, changes: SubscriptionChanges) -> SubscriptionRow | None:
        async def op(c: Conn) -> SubscriptionRow | None:
            if changes.url is not None:
                await c.execute("UPDATE subscriptions SET url = $1 WHERE id = $2", changes.url, sub_id)
                await c.execute(MOVE_PENDING, changes.url, sub_id)
            if changes.event_types is not None:
                types = orjson.dumps(list(changes.event_types)).decode()
                await c.execute("UPDATE subscriptions SET event_types = $1 WHERE id = $2", types, sub_id)
            if changes.paused is not None:
                await c.execute("UPDATE subscriptions SET paused = $1 WHERE id = $2", changes.paused, sub_id)
            row = await c.fetchrow(f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = $1", sub_id)
            return _sub(row) if row else None

        return await self._tx(op)

    async def rotate_subscription_secret(self, sub_id: str, *, now: float, overlap_s: float) -> SubscriptionRow | None:
        async def op(c: Conn) -> SubscriptionRow | None:
            await c.execute(ROTATE, now + overlap_s, sub_id)
            row = await c.fetchrow(f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = $1", sub_id)
            return _sub(row) if row else None

        return await self._tx(op)

    async def add_test_event(self, event: OutboxEvent, sub: SubscriptionRow, *, now: float) -> None:
        async def op(c: Conn) -> None:
            await c.execute(INSERT_OUTBOX, *rows.outbox_params(event))
            await c.execute(INSERT_TEST_DELIVERY, event.id, sub.id, sub.url, sub.asymmetric, now)

        await self._tx(op)

    async def list_events(
        self, tenant: str, *, since: float, limit: int, type: str | None = None, before: tuple[float, str] | None = None
    ) -> list[OutboxRow]:
        at, last = (before[0], before[1]) if before else (None, None)
        found = await self._read(lambda c: c.fetch(EVENTS_NEWEST, tenant, since, type, at, last, limit))
        return [OutboxRow(*r) for r in found]

    async def get_event(self, event_id: str) -> OutboxRow | None:
        row = await self._read(lambda c: c.fetchrow(SELECT_OUTBOX, event_id))
        return OutboxRow(*row) if row else None

    async def event_deliveries(self, event_id: str) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
        async def fn(c: Conn) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
            found = await c.fetch(f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE event_id = $1 ORDER BY id", event_id)
            out = []
            for r in found:
                d = _delivery(r)
                attempts = await c.fetch("SELECT * FROM delivery_attempts WHERE delivery_id = $1 ORDER BY n", d.id)
                out.append((d, [DeliveryAttemptRow(*a) for a in attempts]))
            return out

        return await self._read(fn)

    async def claim_deliveries(
        self, owner: str, *, now: float, limit: int, lease_s: float, per_endpoint: int
    ) -> list[ClaimedDelivery]:
        async def op(c: Conn) -> list[ClaimedDelivery]:
            await c.execute(CLAIM_LOCK)
            claimed = [_delivery(r) for r in await c.fetch(CLAIM, owner, now + lease_s, now, limit, per_endpoint)]
            out = []
            for d in claimed:
                found = await c.fetchrow(SELECT_OUTBOX, d.event_id)
                assert found is not None  # deliveries reference the outbox
                event = OutboxRow(*found)
                signing = await c.fetchrow(SELECT_SIGNING, d.target) if d.target != "batch" else None
                version, previous_until = (signing[0], signing[1]) if signing else (0, None)
                out.append(ClaimedDelivery(d, event.payload, event.tenant, version, previous_until))
            return out

        return await self._tx(op)

    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> bool:
        n = delivery.attempts + 1
        state = {"delivered": "delivered", "retry": "pending"}.get(result.outcome, "dead")
        finished = None if state == "pending" else now
        is_sub = delivery.target != "batch"

        async def op(c: Conn) -> bool:
            await c.execute(INSERT_ATTEMPT, delivery.id, n, now, result.status, result.duration_ms, result.error)
            await c.execute(FINISH, n, state, result.next_at or now, result.status, result.error, finished, delivery.id)
            if result.slow_down_s is not None:
                await c.execute(SLOW_DOWN, delivery.origin, now, result.slow_down_s, result.slow_down_max_s)
            if result.outcome == "delivered":
                await c.execute(FORGET_SLOW_DOWN, delivery.origin)
                if is_sub:
                    await c.execute(SUB_HEALTHY, delivery.target)
                return False
            if not is_sub:
                return False
            if result.outcome == "gone":
                await c.execute(DISABLE_SUB, now, "endpoint answered 410 Gone", delivery.target)
                await c.execute(KILL_PENDING_OF_SUB, now, delivery.target)
                return False
            row = await c.fetchrow(SUB_FAILING, now, delivery.target)
            sub = _sub(row) if row else None
            limit = result.disable_after_s
            if sub and limit is not None and sub.failing_since is not None and now - sub.failing_since >= limit:
                await _disable(c, sub, f"failing for {limit / 86400:g} days", now)
                return True
            return False

        return await self._tx(op)

    async def replay_event(self, event_id: str, *, now: float, everything: bool = False) -> int:
        return _rowcount(await self._read(lambda c: c.execute(REPLAY_EVENT, now, event_id, everything)))

    async def replay_subscription(self, sub_id: str, *, since: float, now: float, everything: bool = False) -> int:
        return _rowcount(await self._read(lambda c: c.execute(REPLAY_SUB, now, sub_id, everything, since)))

    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]:
        cols = ", ".join("d." + c.strip() for c in _DELIVERY_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM deliveries d JOIN outbox o ON o.id = d.event_id "
            "WHERE o.tenant = $1 AND d.state = 'dead' ORDER BY d.created_at DESC LIMIT $2"
        )
        return [_delivery(r) for r in await self._read(lambda c: c.fetch(sql, tenant, limit))]
