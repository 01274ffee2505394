"""The submitter: claims queued jobs and creates their upstream tasks, within the account's
concurrency (tasks in flight) and rate (creates per second) limits, never paying twice."""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace

from service import spend
from service.backoff import Backoff
from service.balance import BalanceGuard
from service.changes import apply
from service.completion import policy_of
from service.context import Services
from service.history import webhook_endpoint
from service.job_actions import cancel_upstream
from service.jobs import Change, DecideFn, JobRow, TaskRow, TaskUpsert
from service.preflight import SharedPreflights
from service.ratelimit import TokenBucket
from service.states import Event, State
from service.upstream.errors import (
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTransient,
)
from service.upstream.wire import CreateRequest, TaskSnapshot
from service.urlguard import GuardedSession
from service.wakeup import Topic
from service.worker_base import Worker

# A refusal that says the account, not the job, is the problem: wait for an operator, don't fail.
_ACCOUNT_STATUSES = frozenset({401, 402, 403})
_ANSWER_MARGIN_S = 5.0
"""A sent create's lease outlasts the client's timeout by this much: time to record the answer."""


class Submitter(Worker):
    name = "submitter"
    topic = Topic.SUBMIT

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        s = services.settings
        self.bucket = TokenBucket(s.creates_per_s)
        self.slots = asyncio.Semaphore(s.submit_concurrency)
        self.backoff = Backoff(s.submit_backoff_base_s, s.submit_backoff_max_s)
        self.owner = f"{services.instance_id}:submitter"
        self.guard = BalanceGuard(services)
        self.http = GuardedSession(s.allow_private_image_urls, limit=64)  # preflight reads
        self.preflights = SharedPreflights(services, self.http.get)
        self.defaults = spend.Caps(None, s.tenant_daily_usd or None, s.tenant_monthly_usd or None)
        # The series every job counts to, looked up once (a labels() lookup costs a lock and a dict).
        m = services.metrics
        self._created_ok = m.upstream_calls.labels(op="create", result="ok")
        self._preflighted = {r: m.preflights.labels(result=r) for r in ("refused", "ok", "unknown")}

    @property
    def interval(self) -> float:
        s = self.services.settings
        # While paused, the next balance read is what can resume creates: come back for it.
        return min(s.submit_interval_s, s.balance_check_s) if self.guard.paused else s.submit_interval_s

    async def stop(self, timeout: float = 10.0) -> None:
        await super().stop(timeout)
        await self.http.close()

    async def round(self) -> bool:
        s = self.services.settings
        held = s.submit_concurrency
        if s.creates_per_s > 0:  # hold no more claims than the rate sends well within their lease
            held = min(held, max(1, int(s.creates_per_s * s.submit_lease_s / 2)))
        free = held - len(self._inflight)
        allowed = await self.guard.allows_creates()
        await self.guard.publish()
        if free <= 0 or not allowed:
            return False
        jobs = await self.services.store.claim_queued(
            self.owner,
            now=time.time(),
            limit=min(s.submit_batch, free),
            max_in_flight=s.max_in_flight,
            lease_s=s.submit_lease_s,
            max_fetch_backlog=s.max_fetch_backlog,
            tenant_max_in_flight=s.tenant_max_in_flight,
        )
        for job in jobs:
            self.spawn(self.submit(job))
        return len(jobs) == min(s.submit_batch, free)

    async def submit(self, job: JobRow) -> None:
        """Create job's upstream task for its current attempt and record what happened."""
        attributes = {"segflow.job.id": job.id, "segflow.attempt": job.attempt, "segflow.tenant": job.tenant}
        with self.services.tracing.job_span("segflow.submit", job.trace_context, attributes):
            await self._submit(job)

    async def _submit(self, job: JobRow) -> None:
        log = self.log.bind(job_id=job.id, attempt=job.attempt)
        async with self.slots:
            if not await self._reserve(job):
                return
            request = CreateRequest(
                image=job.image,
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
                segment_factor=job.segment_factor,
                webhook_endpoint=webhook_endpoint(self.services.settings, job.id, job.attempt),
                webhook_secret=self.services.secrets.derive(job.id, job.attempt),
                service_mode=self.services.settings.upstream_service_mode,
            )
            calls = self.services.metrics.upstream_calls
            try:
                snap = await self.services.upstream.create_task(request)
            except UpstreamError as exc:
                calls.labels(op="create", result=type(exc).__name__).inc()
                change = self._on_error(job, exc)
                log.info(
                    "create_failed",
                    error_class=type(exc).__name__,
                    error=str(exc),
                    next=change.event.value if change.event else None,
                )
                await self._write(job, lambda cur, _t: change if _same_attempt(cur, job) else None)
                return
            self._created_ok.inc()
            trace.get_current_span().set_attribute("segflow.task.id", snap.task_id)
            log = log.bind(task_id=snap.task_id)
            outcome = await self._write(job, self._created(job, snap), task_id=snap.task_id)
            log.info("task_created", state=outcome.value if outcome else None)
            if outcome is State.CANCELLED:
                await cancel_upstream(self.services, snap.task_id)

    async def _reserve(self, job: JobRow) -> bool:
        """Preflight the image (unless its estimate is known), take a create token, then in one
        write reserve the estimate against the spend caps and mark the create as about to go out
        (see `Store.reserve`); False when the job must not be created now (refused, failed, held
        back, or its claim lapsed). True: send the create at once."""
        s, metrics = self.services.settings, self.services.metrics
        estimate = job.est_usd
        if estimate is None and s.preflight:
            found = await self.preflights.check(job.image)
            self._preflighted["refused" if found.refused else "ok" if found.pixels else "unknown"].inc()
            if found.refused:
                self.log.info("preflight_refused", job_id=job.id, reason=found.refused)
                refuse = Change(
                    Event.REJECTED,
                    "submitter",
                    set={"error_code": "invalid_image", "error_message": found.refused[:500]},
                    detail={"preflight": found.refused[:200]},
                )
                await self._write(job, lambda cur, _t: refuse if _same_attempt(cur, job) else None)
                return False
            estimate = found.estimate_usd
        # The token before the write that marks the job sent, so the create follows the mark at
        # once. A token spent on a job a cap then refuses is lost: creates only go slower, the
        # rate limit is never exceeded.
        await self.bucket.acquire()
        now = time.time()
        reservation = await self.services.store.reserve(
            job,
            spend.WORST_CASE_USD if estimate is None else estimate,
            now=now,
            defaults=self.defaults,
            send_lease_until=now + s.upstream_timeout_s + _ANSWER_MARGIN_S,
            hold_s=s.budget_recheck_s,
        )
        if reservation.held:
            return True
        if reservation.reason in ("job gone", "lease lost"):
            self.log.info("claim_lapsed_before_send", job_id=job.id, reason=reservation.reason)
            return False
        reason = str(reservation.reason)
        fail = reservation.on_budget == "fail"
        metrics.budget_holds.labels(action="failed" if fail else "waiting").inc()
        self.log.info("budget_hold", job_id=job.id, reason=reason, action=reservation.on_budget)
        hold = (
            Change(Event.REJECTED, "submitter", set={"error_code": "budget_exceeded", "error_message": reason})
            if fail
            else Change(
                Event.RETRY_LATER,
                "submitter",
                set={
                    "not_before": time.time() + s.budget_recheck_s,
                    "est_usd": estimate,
                    "error_code": "budget_wait",
                    "error_message": reason,
                },
                detail={"budget": reason},
            )
        )
        await self._write(job, lambda cur, _t: hold if _same_attempt(cur, job) else None)
        return False

    def _created(self, claimed: JobRow, snap: TaskSnapshot) -> DecideFn:
        poll_after = policy_of(self.services).next_poll_s(snap.status)

        def decide(job: JobRow | None, task: TaskRow | None) -> Change | None:
            if job is None or job.attempt != claimed.attempt:
                return None
            upsert = TaskUpsert(snap.task_id, claimed.attempt, "created", snap.status.value)
            detail = {"task_id": snap.task_id, "attempt": claimed.attempt}
            now = time.time()
            if job.state in (State.SUBMITTING, State.UNKNOWN) and job.task_id is None:
                return Change(
                    Event.CREATED if job.state is State.SUBMITTING else Event.PROGRESS,
                    "submitter",
                    set={
                        "task_id": snap.task_id,
                        "submitted_at": now,
                        "next_check_at": now + poll_after,
                        "error_code": None,
                        "error_message": None,
                    },
                    task=upsert,
                    detail=detail,
                )
            if task is None:
                # A webhook got here first, or the job was cancelled meanwhile: keep the record.
                return Change(None, "submitter", task=upsert, note="task_recorded", detail=detail)
            return None

        return decide

    def _on_error(self, job: JobRow, exc: UpstreamError) -> Change:
        now = time.time()
        s = self.services.settings
        if isinstance(exc, UpstreamAmbiguous):
            # With the history, look soon (the task, if any, is listed within the settle delay);
            # without it, wait for a webhook as long as one is usually late.
            wait = s.history_settle_s if s.history_lookup else self.services.timings.current(s).adoption_window_s
            return Change(
                Event.AMBIGUOUS,
                "submitter",
                set={
                    "unknown_since": now,
                    "next_check_at": now + wait,
                },
                detail={"error": type(exc).__name__},
            )
        if isinstance(exc, UpstreamRejected) and exc.status == 402:
            # Out of credit: the account, not the job. Creates pause until the balance is back.
            self.guard.refused(exc.message)
            return Change(
                Event.RETRY_LATER,
                "submitter",
                set={"error_code": "balance_paused", "error_message": exc.message[:500]},
                detail={"status": 402},
            )
        if isinstance(exc, UpstreamRejected) and exc.status not in _ACCOUNT_STATUSES:
            return Change(
                Event.REJECTED,
                "submitter",
                set={"error_code": "upstream_rejected", "error_message": exc.message[:500]},
                detail={"status": exc.status},
            )
        delay = self.backoff.delay(job.submit_tries)
        if isinstance(exc, UpstreamRateLimited):
            delay = max(delay, exc.retry_after or 0.0)
            self.bucket.pause(exc.retry_after or delay)
        code = (
            "upstream_account"
            if isinstance(exc, UpstreamRejected)
            else ("upstream_rate_limited" if isinstance(exc, UpstreamRateLimited) else "upstream_unavailable")
        )
        assert isinstance(exc, UpstreamRejected | UpstreamRateLimited | UpstreamTransient)
        return Change(
            Event.RETRY_LATER,
            "submitter",
            set={
                "not_before": now + delay,
                "submit_tries": job.submit_tries + 1,
                "error_code": code,
                "error_message": str(exc)[:500],
            },
            detail={"retry_in_s": round(delay, 3), "error": type(exc).__name__},
        )

    async def _write(self, claimed: JobRow, decide: DecideFn, task_id: str | None = None) -> State | None:
        outcome = await apply(self.services, claimed.id, decide, source="submitter", task_id=task_id)
        return outcome.after.state if outcome.after else None


def _same_attempt(current: JobRow | None, claimed: JobRow) -> bool:
    return current is not None and current.state is State.SUBMITTING and current.attempt == claimed.attempt
