"""The PostgreSQL side of outbound callbacks (the same behaviour as sqlite_callbacks.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
import asyncpg.pool
import orjson

from service.callback_events import OutboxEvent, batch_completed_event
from service.states import TERMINAL
from service.store import rows
from service.store.base import (
    AttemptResult,
    ClaimedDelivery,
    DeliveryAttemptRow,
    DeliveryRow,
    OutboxRow,
    SubscriptionRow,
)

T = TypeVar("T")
# Pooled connections are proxies; the listener holds a plain connection.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
_TERMINAL = ", ".join(f"'{s.value}'" for s in TERMINAL)
_DELIVERY_COLS = (
    "id, event_id, target, url, signer, ed25519, state, attempts, next_at, last_status, last_error, "
    "created_at, finished_at"
)
_OUTBOX_COLS = "id, tenant, type, batch_id, job_id, payload, created_at, trace_context"
_SUB_COLS = "id, tenant, url, event_types, ed25519, created_at, disabled_at, disabled_reason"

INSERT_OUTBOX = f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
FAN_OUT = """
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at)
SELECT $1::text, 'batch', b.callback_url, 'tenant:' || b.tenant, false, 'pending', $2::float8, $2::float8
  FROM batches b WHERE b.id = $3 AND b.callback_url IS NOT NULL
UNION ALL
SELECT $1::text, s.id, s.url, s.id, s.ed25519, 'pending', $2::float8, $2::float8
  FROM subscriptions s
 WHERE s.tenant = $4 AND s.disabled_at IS NULL
   AND (s.event_types = '[]' OR s.event_types::jsonb ? $5::text)
ON CONFLICT DO NOTHING
"""
LIVE_IN_BATCH = f"SELECT count(*) FROM jobs WHERE batch_id = $1 AND state NOT IN ({_TERMINAL})"
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = $1 GROUP BY state"
# Due deliveries, at most `per_endpoint` in flight per URL (counting leases held anywhere). A
# window function cannot be combined with FOR UPDATE, so claimers take turns on an advisory lock.
CLAIM_LOCK = "SELECT pg_advisory_xact_lock(727002)"
CLAIM = f"""
UPDATE deliveries SET lease_owner = $1, lease_until = $2
 WHERE id IN (
   SELECT id FROM (
     SELECT d.id, d.url, d.next_at, ROW_NUMBER() OVER (PARTITION BY d.url ORDER BY d.next_at) AS rn
       FROM deliveries d
      WHERE d.state = 'pending' AND d.next_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
   ) c
   WHERE c.rn + (SELECT count(*) FROM deliveries b
                  WHERE b.url = c.url AND b.state = 'pending' AND b.lease_until >= $3) <= $5
   ORDER BY c.next_at LIMIT $4)
RETURNING {_DELIVERY_COLS}
"""
SELECT_OUTBOX = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = $1"
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
REPLAY_EVENT = (
    "UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, "
    "lease_until = NULL WHERE event_id = $2 AND (target = 'batch' OR target IN "
    "(SELECT id FROM subscriptions WHERE disabled_at IS NULL))"
)
REPLAY_SUB = (
    "UPDATE deliveries SET state = 'pending', next_at = $1, finished_at = NULL, lease_owner = NULL, "
    "lease_until = NULL WHERE target = $2 AND state = 'dead' AND created_at >= $3"
)


async def write_outbox(c: Conn, event: OutboxEvent, now: float) -> None:
    """Inside a job's transition: its event, its deliveries, and the batch's if it just completed."""
    await _emit(c, event, now)
    if await c.fetchval(LIVE_IN_BATCH, event.batch_id) == 0:
        counts = await c.fetch(BATCH_COUNTS, event.batch_id)
        spend = sum(float(r[2]) for r in counts)
        done = batch_completed_event(
            event.tenant, event.batch_id, {r[0]: int(r[1]) for r in counts}, spend, now, event.trace_context
        )
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


class PostgresCallbacks:
    """Mixed into PostgresStore: callback queries over its pool."""

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def add_subscription(self, sub: SubscriptionRow) -> None:
        sql = f"INSERT INTO subscriptions ({_SUB_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        types = orjson.dumps(list(sub.event_types)).decode()
        await self._read(
            lambda c: c.execute(
                sql,
                sub.id,
                sub.tenant,
                sub.url,
                types,
                sub.asymmetric,
                sub.created_at,
                sub.disabled_at,
                sub.disabled_reason,
            )
        )

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

    async def list_events(self, tenant: str, *, since: float, limit: int) -> list[OutboxRow]:
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE tenant = $1 AND created_at >= $2 ORDER BY created_at LIMIT $3"
        return [OutboxRow(*r) for r in await self._read(lambda c: c.fetch(sql, tenant, since, limit))]

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
                out.append(ClaimedDelivery(d, event.payload, event.tenant, event.trace_context))
            return out

        return await self._tx(op)

    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> None:
        n = delivery.attempts + 1
        state = {"delivered": "delivered", "retry": "pending"}.get(result.outcome, "dead")
        finished = None if state == "pending" else now

        async def op(c: Conn) -> None:
            await c.execute(INSERT_ATTEMPT, delivery.id, n, now, result.status, result.duration_ms, result.error)
            await c.execute(FINISH, n, state, result.next_at or now, result.status, result.error, finished, delivery.id)
            if result.outcome == "gone" and delivery.target != "batch":
                await c.execute(DISABLE_SUB, now, "endpoint answered 410 Gone", delivery.target)
                await c.execute(KILL_PENDING_OF_SUB, now, delivery.target)

        await self._tx(op)

    async def replay_event(self, event_id: str, *, now: float) -> int:
        return _rowcount(await self._read(lambda c: c.execute(REPLAY_EVENT, now, event_id)))

    async def replay_subscription(self, sub_id: str, *, since: float, now: float) -> int:
        return _rowcount(await self._read(lambda c: c.execute(REPLAY_SUB, now, sub_id, since)))

    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]:
        cols = ", ".join("d." + c.strip() for c in _DELIVERY_COLS.split(","))
        sql = (
            f"SELECT {cols} FROM deliveries d JOIN outbox o ON o.id = d.event_id "
            "WHERE o.tenant = $1 AND d.state = 'dead' ORDER BY d.created_at DESC LIMIT $2"
        )
        return [_delivery(r) for r in await self._read(lambda c: c.fetch(sql, tenant, limit))]
