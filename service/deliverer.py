"""The deliverer: sends outbox events to clients' URLs, signed in the Standard Webhooks format,
retrying on a growing schedule until the last attempt dead-letters the delivery.

Each delivery keeps its event id as `webhook-id` through every retry and replay, so receivers
can drop duplicates. The claim lets at most `per_endpoint` deliveries per origin be in flight
(across replicas), so a slow or dead endpoint only ever ties up its own share.

Etiquette: a `Retry-After` on 429 or 503 is honoured (up to `retry_after_max_s`), an endpoint
answering 429/502/503/504 is left alone for a while (doubling while it keeps answering so), and a
subscription that has failed for `disable_after_s` is disabled with a `subscription.disabled` event.
"""

from __future__ import annotations

import random
import time

import aiohttp

from service.context import Services
from service.jobs import AttemptResult, ClaimedDelivery
from service.links import with_download_link
from service.retry_after import retry_after_s
from service.signing import subscription_owners
from service.urlguard import GuardedSession, UrlRefused, callback_policy
from service.wakeup import Topic
from service.worker_base import Worker

MAX_RESPONSE_BYTES = 65_536
SLOW_DOWN_STATUSES = frozenset({429, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})


def next_attempt_at(attempts_made: int, schedule: tuple[float, ...], now: float, rng: random.Random) -> float | None:
    """When to try again after `attempts_made` failed attempts (±20% jitter); None: give up."""
    if attempts_made > len(schedule):
        return None
    return now + schedule[attempts_made - 1] * rng.uniform(0.8, 1.2)


def outcome_of(
    status: int | None, attempts_made: int, schedule: tuple[float, ...], now: float, rng: random.Random
) -> tuple[str, float | None]:
    """(outcome, next attempt time) for an attempt that got `status` (None: no answer)."""
    if status is not None and 200 <= status < 300:
        return "delivered", None
    if status == 410:
        return "gone", None
    retry_at = next_attempt_at(attempts_made, schedule, now, rng)
    return ("retry", retry_at) if retry_at is not None else ("dead", None)


class Deliverer(Worker):
    name = "deliverer"
    topic = Topic.DELIVER

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.owner = f"{services.instance_id}:deliverer"
        self.policy = callback_policy(services.settings)
        self.rng = random.Random()
        # A callback URL may itself be a capability (hooks.example/catch/<token>): spans keep its origin only.
        self.http = GuardedSession(
            self.policy.allow_private, limit=256, trace_configs=services.tracing.client_trace_configs(origin_only=True)
        )

    @property
    def interval(self) -> float:
        return self.services.settings.callback_interval_s

    async def stop(self, timeout: float = 10.0) -> None:
        await super().stop(timeout)
        await self.http.close()

    async def round(self) -> bool:
        s = self.services.settings
        free = s.callback_batch - len(self._inflight)
        if free <= 0:
            return False
        claimed = await self.services.store.claim_deliveries(
            self.owner, now=time.time(), limit=free, lease_s=s.callback_lease_s, per_endpoint=s.callback_per_endpoint
        )
        for item in claimed:
            self.spawn(self.deliver(item))
        return len(claimed) == free

    async def deliver(self, item: ClaimedDelivery) -> None:
        d = item.delivery
        attributes = {
            "segflow.event.id": d.event_id,
            "segflow.callback.target": d.target,
            "segflow.tenant": item.tenant,
        }
        with self.services.tracing.job_span("segflow.callback", item.trace_context, attributes) as span:
            status, retry_after, error, duration_ms = await self._post(item)  # the POST carries `traceparent`
            span.set_attribute("segflow.callback.attempt", d.attempts + 1)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
        await self._finish(item, status, retry_after, error, duration_ms)

    async def _finish(
        self, item: ClaimedDelivery, status: int | None, retry_after: str | None, error: str | None, duration_ms: float
    ) -> None:
        d = item.delivery
        s = self.services.settings
        attempts = d.attempts + 1
        now = time.time()
        outcome, next_at = outcome_of(status, attempts, s.callback_retry_schedule_s, now, self.rng)
        if error and error.startswith("refused:"):
            outcome, next_at = "dead", None  # the URL itself is not allowed: retrying cannot help
        slow_down = None
        if status in SLOW_DOWN_STATUSES:
            slow_down = s.callback_slow_down_s
            wait = retry_after_s(retry_after, now) if status in RETRY_AFTER_STATUSES else None
            if wait is not None:
                wait = min(wait, s.callback_retry_after_max_s)
                slow_down = max(slow_down, wait)
                if next_at is not None:
                    next_at = max(next_at, now + wait)  # never before the endpoint said
        result = AttemptResult(
            status,
            duration_ms,
            error,
            outcome,
            next_at,
            slow_down_s=slow_down,
            slow_down_max_s=max(s.callback_slow_down_max_s, slow_down or 0.0),
            disable_after_s=s.callback_disable_after_s or None,
        )
        disabled = await self.services.store.finish_attempt(d, result, now=now)
        self.services.metrics.callbacks.labels(outcome=outcome).inc()
        if disabled:
            self.services.metrics.subscriptions_disabled.labels(reason=disabled).inc()
            self.log.warning("subscription_disabled", subscription_id=d.target, reason=disabled)
        self.log.info(
            "callback_attempt",
            event_id=d.event_id,
            target=d.target,
            attempt=attempts,
            status=status,
            outcome=outcome,
            error=error,
            duration_ms=round(duration_ms, 1),
        )

    async def _post(self, item: ClaimedDelivery) -> tuple[int | None, str | None, str | None, float]:
        """(status, Retry-After, error, milliseconds) of one attempt."""
        d = item.delivery
        body = with_download_link(item.payload, self.services.links).encode()
        started = time.perf_counter()
        try:
            self.policy.check(d.url)  # again at send time: the URL was stored under older rules, perhaps
        except UrlRefused as exc:
            return None, None, f"refused: {exc}", 0.0
        now = time.time()
        owners = (
            [d.signer]
            if d.target == "batch"
            else subscription_owners(d.signer, item.secret_version, item.previous_secret_until, now)
        )
        headers = self.services.signer.headers(owners, d.event_id, int(now), body, asymmetric=d.asymmetric)
        headers |= {"content-type": "application/json", "user-agent": "segflow-callbacks/1"}
        timeout = aiohttp.ClientTimeout(total=self.services.settings.callback_timeout_s)
        try:
            async with self.http.get().post(
                d.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_RESPONSE_BYTES)  # bounded: the answer's body is not needed
                status = resp.status
                retry_after = resp.headers.get("retry-after")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"[:300], (time.perf_counter() - started) * 1000
        error = None if 200 <= status < 300 else f"answered {status}"
        return status, retry_after, error, (time.perf_counter() - started) * 1000
