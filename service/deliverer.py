"""The deliverer: sends outbox events to clients' URLs, signed in the Standard Webhooks format,
retrying on a growing schedule until the last attempt dead-letters the delivery.

Each delivery keeps its event id as `webhook-id` through every retry and replay, so receivers
can drop duplicates. The claim lets at most `per_endpoint` deliveries per URL be in flight (across
replicas), so a slow or dead endpoint only ever ties up its own share.
"""

from __future__ import annotations

import random
import time

import aiohttp

from service.context import Services
from service.jobs import AttemptResult, ClaimedDelivery
from service.links import with_download_link
from service.urlguard import GuardedSession, UrlRefused, callback_policy
from service.wakeup import Topic
from service.worker_base import Worker

MAX_RESPONSE_BYTES = 65_536


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
            status, error, duration_ms = await self._post(item)  # the POST carries `traceparent`
            span.set_attribute("segflow.callback.attempt", d.attempts + 1)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
        await self._finish(item, status, error, duration_ms)

    async def _finish(self, item: ClaimedDelivery, status: int | None, error: str | None, duration_ms: float) -> None:
        d = item.delivery
        attempts = d.attempts + 1
        now = time.time()
        outcome, next_at = outcome_of(status, attempts, self.services.settings.callback_retry_schedule_s, now, self.rng)
        if error and error.startswith("refused:"):
            outcome, next_at = "dead", None  # the URL itself is not allowed: retrying cannot help
        await self.services.store.finish_attempt(
            d, AttemptResult(status, duration_ms, error, outcome, next_at), now=now
        )
        self.services.metrics.callbacks.labels(outcome=outcome).inc()
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

    async def _post(self, item: ClaimedDelivery) -> tuple[int | None, str | None, float]:
        d = item.delivery
        body = with_download_link(item.payload, self.services.links).encode()
        started = time.perf_counter()
        try:
            self.policy.check(d.url)  # again at send time: the URL was stored under older rules, perhaps
        except UrlRefused as exc:
            return None, f"refused: {exc}", 0.0
        headers = self.services.signer.headers(d.signer, d.event_id, int(time.time()), body, asymmetric=d.asymmetric)
        headers |= {"content-type": "application/json", "user-agent": "segflow-callbacks/1"}
        timeout = aiohttp.ClientTimeout(total=self.services.settings.callback_timeout_s)
        try:
            async with self.http.get().post(
                d.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_RESPONSE_BYTES)  # bounded: the answer's body is not needed
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300], (time.perf_counter() - started) * 1000
        error = None if 200 <= status < 300 else f"answered {status}"
        return status, error, (time.perf_counter() - started) * 1000
