"""The SQLite side of outbound callbacks: the outbox written inside a job's transition, and the
subscriptions and deliveries the deliverer and the API work with."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

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
_TERMINAL = ", ".join(f"'{s.value}'" for s in TERMINAL)
_DELIVERY_COLS = (
    "id, event_id, target, url, signer, ed25519, state, attempts, next_at, last_status, last_error, "
    "created_at, finished_at"
)
_OUTBOX_COLS = "id, tenant, type, batch_id, job_id, payload, created_at, trace_context"
_SUB_COLS = "id, tenant, url, event_types, ed25519, created_at, disabled_at, disabled_reason"

INSERT_OUTBOX = f"INSERT OR IGNORE INTO outbox ({_OUTBOX_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# One statement fans an event out to every destination: the batch's callback_url and each enabled
# subscription of the tenant that wants this event type.
FAN_OUT = """
INSERT OR IGNORE INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at)
SELECT :event, 'batch', b.callback_url, 'tenant:' || b.tenant, 0, 'pending', :now, :now
  FROM batches b WHERE b.id = :batch AND b.callback_url IS NOT NULL
UNION ALL
SELECT :event, s.id, s.url, s.id, s.ed25519, 'pending', :now, :now
  FROM subscriptions s
 WHERE s.tenant = :tenant AND s.disabled_at IS NULL
   AND (s.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(s.event_types) WHERE value = :type))
"""
LIVE_IN_BATCH = f"SELECT count(*) FROM jobs WHERE batch_id = ? AND state NOT IN ({_TERMINAL})"
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = ? GROUP BY state"
# Due deliveries, at most `per_endpoint` in flight per URL (counting leases held anywhere), so
# one slow or dead endpoint never takes every slot.
CLAIM = f"""
UPDATE deliveries SET lease_owner = :owner, lease_until = :until
 WHERE id IN (
   SELECT id FROM (
     SELECT d.id, d.url, d.next_at, ROW_NUMBER() OVER (PARTITION BY d.url ORDER BY d.next_at) AS rn
       FROM deliveries d
      WHERE d.state = 'pending' AND d.next_at <= :now AND (d.lease_until IS NULL OR d.lease_until < :now)
   ) c
   WHERE c.rn + (SELECT count(*) FROM deliveries b
                  WHERE b.url = c.url AND b.state = 'pending' AND b.lease_until >= :now) <= :per_endpoint
   ORDER BY c.next_at LIMIT :limit)
RETURNING {_DELIVERY_COLS}
"""
SELECT_OUTBOX = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?"
INSERT_ATTEMPT = "INSERT OR REPLACE INTO delivery_attempts VALUES (?, ?, ?, ?, ?, ?)"
FINISH = """
UPDATE deliveries SET attempts = ?, state = ?, next_at = ?, last_status = ?, last_error = ?,
       lease_owner = NULL, lease_until = NULL, finished_at = ?
 WHERE id = ?
"""
DISABLE_SUB = "UPDATE subscriptions SET disabled_at = ?, disabled_reason = ? WHERE id = ? AND disabled_at IS NULL"
KILL_PENDING_OF_SUB = (
    "UPDATE deliveries SET state = 'dead', last_error = 'subscription disabled', finished_at = ?, "
    "lease_owner = NULL, lease_until = NULL WHERE target = ? AND state = 'pending'"
)
REPLAY_EVENT = (
    "UPDATE deliveries SET state = 'pending', next_at = ?, finished_at = NULL, lease_owner = NULL, "
    "lease_until = NULL WHERE event_id = ? AND (target = 'batch' OR target IN "
    "(SELECT id FROM subscriptions WHERE disabled_at IS NULL))"
)
REPLAY_SUB = (
    "UPDATE deliveries SET state = 'pending', next_at = ?, finished_at = NULL, lease_owner = NULL, "
    "lease_until = NULL WHERE target = ? AND state = 'dead' AND created_at >= ?"
)


def write_outbox(c: sqlite3.Connection, event: OutboxEvent, now: float) -> None:
    """Inside a job's transition: its event, its deliveries, and the batch's if it just completed."""
    _emit(c, event, now)
    if c.execute(LIVE_IN_BATCH, (event.batch_id,)).fetchone()[0] == 0:
        counts = c.execute(BATCH_COUNTS, (event.batch_id,)).fetchall()
        spend = sum(p for *_, p in counts)
        done = batch_completed_event(
            event.tenant, event.batch_id, {s: n for s, n, _ in counts}, spend, now, event.trace_context
        )
        _emit(c, done, now)


def _emit(c: sqlite3.Connection, event: OutboxEvent, now: float) -> None:
    if c.execute(INSERT_OUTBOX, rows.outbox_params(event)).rowcount:
        c.execute(
            FAN_OUT,
            {
                "event": event.id,
                "now": now,
                "batch": event.batch_id,
                "tenant": event.tenant,
                "type": event.type,
            },
        )


def _sub(row: Any) -> SubscriptionRow:
    values = list(row)
    values[3] = tuple(orjson.loads(values[3]))
    values[4] = bool(values[4])
    return SubscriptionRow(*values)


def _delivery(row: Any) -> DeliveryRow:
    values = list(row)
    values[5] = bool(values[5])
    return DeliveryRow(*values)


class SqliteCallbacks:
    """Mixed into SqliteStore: callback queries over its reader and group-commit writer."""

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def add_subscription(self, sub: SubscriptionRow) -> None:
        params = (
            sub.id,
            sub.tenant,
            sub.url,
            orjson.dumps(list(sub.event_types)).decode(),
            int(sub.asymmetric),
            sub.created_at,
            sub.disabled_at,
            sub.disabled_reason,
        )
        await self._write(
            lambda c: c.execute(f"INSERT INTO subscriptions ({_SUB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", params)
        )

    async def list_subscriptions(self, tenant: str) -> list[SubscriptionRow]:
        sql = f"SELECT {_SUB_COLS} FROM subscriptions WHERE tenant = ? ORDER BY created_at"
        return await self._read(lambda c: [_sub(r) for r in c.execute(sql, (tenant,))])

    async def get_subscription(self, sub_id: str) -> SubscriptionRow | None:
        sql = f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = ?"
        row = await self._read(lambda c: c.execute(sql, (sub_id,)).fetchone())
        return _sub(row) if row else None

    async def delete_subscription(self, tenant: str, sub_id: str) -> bool:
        """Disable (never delete: its deliveries stay visible) and stop its pending deliveries."""

        def op(c: sqlite3.Connection) -> bool:
            found = c.execute("SELECT 1 FROM subscriptions WHERE id = ? AND tenant = ?", (sub_id, tenant)).fetchone()
            if not found:
                return False
            now = time.time()
            c.execute(DISABLE_SUB, (now, "deleted", sub_id))
            c.execute(KILL_PENDING_OF_SUB, (now, sub_id))
            return True

        result: bool = await self._write(op)
        return result

    async def list_events(self, tenant: str, *, since: float, limit: int) -> list[OutboxRow]:
        sql = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE tenant = ? AND created_at >= ? ORDER BY created_at LIMIT ?"
        return await self._read(lambda c: [OutboxRow(*r) for r in c.execute(sql, (tenant, since, limit))])

    async def get_event(self, event_id: str) -> OutboxRow | None:
        row = await self._read(lambda c: c.execute(SELECT_OUTBOX, (event_id,)).fetchone())
        return OutboxRow(*row) if row else None

    async def event_deliveries(self, event_id: str) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
        def fn(c: sqlite3.Connection) -> list[tuple[DeliveryRow, list[DeliveryAttemptRow]]]:
            out = []
            for r in c.execute(f"SELECT {_DELIVERY_COLS} FROM deliveries WHERE event_id = ? ORDER BY id", (event_id,)):
                d = _delivery(r)
                attempts = [
                    DeliveryAttemptRow(*a)
                    for a in c.execute("SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY n", (d.id,))
                ]
                out.append((d, attempts))
            return out

        return await self._read(fn)

    async def claim_deliveries(
        self, owner: str, *, now: float, limit: int, lease_s: float, per_endpoint: int
    ) -> list[ClaimedDelivery]:
        def op(c: sqlite3.Connection) -> list[ClaimedDelivery]:
            params = {"owner": owner, "until": now + lease_s, "now": now, "limit": limit, "per_endpoint": per_endpoint}
            claimed = [_delivery(r) for r in c.execute(CLAIM, params)]
            out = []
            for d in claimed:
                event = OutboxRow(*c.execute(SELECT_OUTBOX, (d.event_id,)).fetchone())
                out.append(ClaimedDelivery(d, event.payload, event.tenant, event.trace_context))
            return out

        result: list[ClaimedDelivery] = await self._write(op)
        return result

    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> None:
        n = delivery.attempts + 1
        state = {"delivered": "delivered", "retry": "pending"}.get(result.outcome, "dead")
        finished = None if state == "pending" else now

        def op(c: sqlite3.Connection) -> None:
            c.execute(INSERT_ATTEMPT, (delivery.id, n, now, result.status, result.duration_ms, result.error))
            c.execute(FINISH, (n, state, result.next_at or now, result.status, result.error, finished, delivery.id))
            if result.outcome == "gone" and delivery.target != "batch":
                c.execute(DISABLE_SUB, (now, "endpoint answered 410 Gone", delivery.target))
                c.execute(KILL_PENDING_OF_SUB, (now, delivery.target))

        await self._write(op)

    async def replay_event(self, event_id: str, *, now: float) -> int:
        result: int = await self._write(lambda c: c.execute(REPLAY_EVENT, (now, event_id)).rowcount)
        return result

    async def replay_subscription(self, sub_id: str, *, since: float, now: float) -> int:
        result: int = await self._write(lambda c: c.execute(REPLAY_SUB, (now, sub_id, since)).rowcount)
        return result

    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]:
        sql = (
            f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLS.split(','))} FROM deliveries d "
            "JOIN outbox o ON o.id = d.event_id WHERE o.tenant = ? AND d.state = 'dead' "
            "ORDER BY d.created_at DESC LIMIT ?"
        )
        return await self._read(lambda c: [_delivery(r) for r in c.execute(sql, (tenant, limit))])
