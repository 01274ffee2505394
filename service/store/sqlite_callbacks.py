"""The SQLite side of outbound callbacks: the outbox written inside a job's transition, and the
subscriptions and deliveries the deliverer and the API work with."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

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

INSERT_OUTBOX = f"INSERT OR IGNORE INTO outbox ({_OUTBOX_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
# One statement fans an event out to every destination: the batch's callback_url and each enabled
# subscription of the tenant that wants this event type (paused ones too: they queue).
FAN_OUT = """
INSERT OR IGNORE INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
SELECT :event, 'batch', b.callback_url, 'tenant:' || b.tenant, 0, 'pending', :now, :now, segflow_origin(b.callback_url)
  FROM batches b WHERE b.id = :batch AND b.callback_url IS NOT NULL
UNION ALL
SELECT :event, s.id, s.url, s.id, s.ed25519, 'pending', :now, :now, segflow_origin(s.url)
  FROM subscriptions s
 WHERE s.tenant = :tenant AND s.disabled_at IS NULL
   AND (s.event_types = '[]' OR EXISTS (SELECT 1 FROM json_each(s.event_types) WHERE value = :type))
"""
INSERT_TEST_DELIVERY = """
INSERT INTO deliveries (event_id, target, url, signer, ed25519, state, next_at, created_at, origin)
VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, segflow_origin(?))
"""
LIVE_IN_BATCH = f"SELECT count(*) FROM jobs WHERE batch_id = ? AND state NOT IN ({_TERMINAL})"
BATCH_COUNTS = "SELECT state, count(*), coalesce(sum(price_usd), 0) FROM jobs WHERE batch_id = ? GROUP BY state"
# Due deliveries, at most `per_endpoint` in flight per origin (scheme, host, port; counting leases
# held anywhere), so one slow or dead endpoint never takes every slot however its URLs are
# spelled; none to an origin that asked to be left alone, none of a paused subscription.
CLAIM = f"""
UPDATE deliveries SET lease_owner = :owner, lease_until = :until
 WHERE id IN (
   SELECT id FROM (
     SELECT d.id, d.origin, d.next_at, ROW_NUMBER() OVER (PARTITION BY d.origin ORDER BY d.next_at) AS rn
       FROM deliveries d
      WHERE d.state = 'pending' AND d.next_at <= :now AND (d.lease_until IS NULL OR d.lease_until < :now)
        AND NOT EXISTS (SELECT 1 FROM endpoint_backoff e WHERE e.origin = d.origin AND e.not_before > :now)
        AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = d.target AND s.paused)
   ) c
   WHERE c.rn + (SELECT count(*) FROM deliveries b
                  WHERE b.origin = c.origin AND b.state = 'pending' AND b.lease_until >= :now) <= :per_endpoint
   ORDER BY c.next_at LIMIT :limit)
RETURNING {_DELIVERY_COLS}
"""
SELECT_OUTBOX = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?"
SELECT_SIGNING = "SELECT secret_version, previous_secret_until FROM subscriptions WHERE id = ?"
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
# The endpoint asked for a pause: at least :base, doubling while it keeps asking, up to :max.
SLOW_DOWN = """
INSERT INTO endpoint_backoff (origin, not_before, penalty_s) VALUES (:origin, :now + :base, :base)
ON CONFLICT (origin) DO UPDATE
   SET penalty_s = min(:max, max(:base, endpoint_backoff.penalty_s * 2)),
       not_before = :now + min(:max, max(:base, endpoint_backoff.penalty_s * 2))
"""
FORGET_SLOW_DOWN = "DELETE FROM endpoint_backoff WHERE origin = ?"
SUB_HEALTHY = "UPDATE subscriptions SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL"
SUB_FAILING = (
    "UPDATE subscriptions SET failing_since = coalesce(failing_since, ?) WHERE id = ? AND disabled_at IS NULL "
    f"RETURNING {_SUB_COLS}"
)
# Replays re-queue what did not get through (dead, or pending after a failed attempt) unless
# asked for everything: a replay must not multiply deliveries that already succeeded.
_REPLAYABLE = "(:everything OR state = 'dead' OR (state = 'pending' AND attempts > 0))"
REPLAY_EVENT = (
    "UPDATE deliveries SET state = 'pending', next_at = :now, finished_at = NULL, lease_owner = NULL, "
    f"lease_until = NULL WHERE event_id = :event AND {_REPLAYABLE} AND (target = 'batch' OR target IN "
    "(SELECT id FROM subscriptions WHERE disabled_at IS NULL))"
)
REPLAY_SUB = (
    "UPDATE deliveries SET state = 'pending', next_at = :now, finished_at = NULL, lease_owner = NULL, "
    f"lease_until = NULL WHERE target = :sub AND {_REPLAYABLE} AND created_at >= :since"
)
COUNT_SUBS = "SELECT count(*) FROM subscriptions WHERE tenant = ? AND disabled_at IS NULL"
INSERT_SUB = f"INSERT INTO subscriptions ({_SUB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
MOVE_PENDING = "UPDATE deliveries SET url = ?, origin = segflow_origin(?) WHERE target = ? AND state = 'pending'"
ROTATE = (
    "UPDATE subscriptions SET secret_version = secret_version + 1, previous_secret_until = ? "
    "WHERE id = ? AND disabled_at IS NULL"
)
_EVENTS_NEWEST = (
    f"SELECT {_OUTBOX_COLS} FROM outbox WHERE tenant = :tenant AND created_at >= :since "
    "AND (:type IS NULL OR type = :type) "
    "AND (:before_at IS NULL OR created_at < :before_at OR (created_at = :before_at AND id < :before_id)) "
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)


def write_outbox(c: sqlite3.Connection, event: OutboxEvent, now: float) -> None:
    """Inside a job's transition: its event, its deliveries, and the batch's if it just completed."""
    _emit(c, event, now)
    if c.execute(LIVE_IN_BATCH, (event.batch_id,)).fetchone()[0] == 0:
        counts = c.execute(BATCH_COUNTS, (event.batch_id,)).fetchall()
        spend = sum(p for *_, p in counts)
        done = batch_completed_event(event.tenant, event.batch_id, {s: n for s, n, _ in counts}, spend, now)
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
    values[8] = bool(values[8])
    return SubscriptionRow(*values)


def _delivery(row: Any) -> DeliveryRow:
    values = list(row)
    values[5] = bool(values[5])
    return DeliveryRow(*values)


def _sub_params(sub: SubscriptionRow) -> tuple[Any, ...]:
    return (
        sub.id,
        sub.tenant,
        sub.url,
        orjson.dumps(list(sub.event_types)).decode(),
        int(sub.asymmetric),
        sub.created_at,
        sub.disabled_at,
        sub.disabled_reason,
        int(sub.paused),
        sub.secret_version,
        sub.previous_secret_until,
        sub.failing_since,
    )


def _disable(c: sqlite3.Connection, sub: SubscriptionRow, reason: str, now: float) -> None:
    """Disable, stop its pending deliveries, and tell the tenant (subscription.disabled)."""
    c.execute(DISABLE_SUB, (now, reason, sub.id))
    c.execute(KILL_PENDING_OF_SUB, (now, sub.id))
    _emit(c, subscription_disabled_event(sub.tenant, sub.id, sub.url, reason, sub.failing_since, now), now)


class SqliteCallbacks:
    """Mixed into SqliteStore: callback queries over its reader and group-commit writer."""

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        raise NotImplementedError

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def add_subscription(self, sub: SubscriptionRow, *, max_per_tenant: int = 0) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            # One writer: the count and the insert cannot interleave with another create.
            if max_per_tenant and c.execute(COUNT_SUBS, (sub.tenant,)).fetchone()[0] >= max_per_tenant:
                return False
            c.execute(INSERT_SUB, _sub_params(sub))
            return True

        added: bool = await self._write(op)
        return added

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

    async def update_subscription(self, sub_id: str, changes: SubscriptionChanges) -> SubscriptionRow | None:
        def op(c: sqlite3.Connection) -> SubscriptionRow | None:
            if changes.url is not None:
                c.execute("UPDATE subscriptions SET url = ? WHERE id = ?", (changes.url, sub_id))
                c.execute(MOVE_PENDING, (changes.url, changes.url, sub_id))
            if changes.event_types is not None:
                types = orjson.dumps(list(changes.event_types)).decode()
                c.execute("UPDATE subscriptions SET event_types = ? WHERE id = ?", (types, sub_id))
            if changes.paused is not None:
                c.execute("UPDATE subscriptions SET paused = ? WHERE id = ?", (int(changes.paused), sub_id))
            row = c.execute(f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            return _sub(row) if row else None

        result: SubscriptionRow | None = await self._write(op)
        return result

    async def rotate_subscription_secret(self, sub_id: str, *, now: float, overlap_s: float) -> SubscriptionRow | None:
        def op(c: sqlite3.Connection) -> SubscriptionRow | None:
            c.execute(ROTATE, (now + overlap_s, sub_id))
            row = c.execute(f"SELECT {_SUB_COLS} FROM subscriptions WHERE id = ?", (sub_id,)).fetchone()
            return _sub(row) if row else None

        result: SubscriptionRow | None = await self._write(op)
        return result

    async def add_test_event(self, event: OutboxEvent, sub: SubscriptionRow, *, now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(INSERT_OUTBOX, rows.outbox_params(event))
            c.execute(INSERT_TEST_DELIVERY, (event.id, sub.id, sub.url, sub.id, int(sub.asymmetric), now, now, sub.url))

        await self._write(op)

    async def list_events(
        self, tenant: str, *, since: float, limit: int, type: str | None = None, before: tuple[float, str] | None = None
    ) -> list[OutboxRow]:
        params = {
            "tenant": tenant,
            "since": since,
            "type": type,
            "before_at": before[0] if before else None,
            "before_id": before[1] if before else None,
            "limit": limit,
        }
        return await self._read(lambda c: [OutboxRow(*r) for r in c.execute(_EVENTS_NEWEST, params)])

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
                signing = c.execute(SELECT_SIGNING, (d.target,)).fetchone() if d.target != "batch" else None
                version, previous_until = signing if signing else (0, None)
                out.append(ClaimedDelivery(d, event.payload, event.tenant, version, previous_until))
            return out

        result: list[ClaimedDelivery] = await self._write(op)
        return result

    async def finish_attempt(self, delivery: DeliveryRow, result: AttemptResult, *, now: float) -> bool:
        n = delivery.attempts + 1
        state = {"delivered": "delivered", "retry": "pending"}.get(result.outcome, "dead")
        finished = None if state == "pending" else now
        is_sub = delivery.target != "batch"

        def op(c: sqlite3.Connection) -> bool:
            c.execute(INSERT_ATTEMPT, (delivery.id, n, now, result.status, result.duration_ms, result.error))
            c.execute(FINISH, (n, state, result.next_at or now, result.status, result.error, finished, delivery.id))
            if result.slow_down_s is not None:
                slow = {
                    "origin": delivery.origin,
                    "now": now,
                    "base": result.slow_down_s,
                    "max": result.slow_down_max_s,
                }
                c.execute(SLOW_DOWN, slow)
            if result.outcome == "delivered":
                c.execute(FORGET_SLOW_DOWN, (delivery.origin,))
                if is_sub:
                    c.execute(SUB_HEALTHY, (delivery.target,))
                return False
            if not is_sub:
                return False
            if result.outcome == "gone":
                c.execute(DISABLE_SUB, (now, "endpoint answered 410 Gone", delivery.target))
                c.execute(KILL_PENDING_OF_SUB, (now, delivery.target))
                return False
            row = c.execute(SUB_FAILING, (now, delivery.target)).fetchone()
            sub = _sub(row) if row else None
            limit = result.disable_after_s
            if sub and limit is not None and sub.failing_since is not None and now - sub.failing_since >= limit:
                _disable(c, sub, f"failing for {limit / 86400:g} days", now)
                return True
            return False

        disabled: bool = await self._write(op)
        return disabled

    async def replay_event(self, event_id: str, *, now: float, everything: bool = False) -> int:
        params = {"now": now, "event": event_id, "everything": int(everything)}
        result: int = await self._write(lambda c: c.execute(REPLAY_EVENT, params).rowcount)
        return result

    async def replay_subscription(self, sub_id: str, *, since: float, now: float, everything: bool = False) -> int:
        params = {"now": now, "sub": sub_id, "since": since, "everything": int(everything)}
        result: int = await self._write(lambda c: c.execute(REPLAY_SUB, params).rowcount)
        return result

    async def dead_deliveries(self, tenant: str, *, limit: int) -> list[DeliveryRow]:
        sql = (
            f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLS.split(','))} FROM deliveries d "
            "JOIN outbox o ON o.id = d.event_id WHERE o.tenant = ? AND d.state = 'dead' "
            "ORDER BY d.created_at DESC LIMIT ?"
        )
        return await self._read(lambda c: [_delivery(r) for r in c.execute(sql, (tenant, limit))])
