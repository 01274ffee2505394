"""The sandbox engine: the API's operations on tasks, and the background work they start."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from service.pricing import price_usd
from service.sandbox.background import BackgroundTasks
from service.sandbox.decisions import Decider
from service.sandbox.images import fetch_image
from service.sandbox.lifecycle import Lifecycle
from service.sandbox.limits import AccountLimits
from service.sandbox.outputs import OutputStore
from service.sandbox.samples import Sample, build_samples
from service.sandbox.settings import FaultSettings, SandboxSettings
from service.sandbox.stats import SandboxStats
from service.sandbox.task import CANCELLED, SandboxTask
from service.sandbox.webhooks import WebhookSender
from service.sandbox.wire import CreateRequest, SandboxError, parse_create

_CANCELLABLE = frozenset({"pending", "staged"})
_INJECTED_5XX = (500, 502, 503)


@dataclass(frozen=True)
class Created:
    """A create's answer and what should happen to it on the way back (see the create_* faults)."""

    task: dict[str, Any]
    fate: str  # "sent", "lost" or "held"


class SandboxEngine:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.faults: FaultSettings = settings.faults
        self.samples: dict[str, Sample] = build_samples()
        self.stats = SandboxStats()
        self.tasks: dict[str, SandboxTask] = {}
        # Set to end every held create answer early: at shutdown nothing may wait create_hold_s.
        self.holds_released = asyncio.Event()
        self._decider = Decider(settings.seed)
        self._ordinals: Counter[str] = Counter()
        self._bursts: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None
        self._background = BackgroundTasks("sandbox")
        self.outputs = OutputStore(time.monotonic)
        self.limits = AccountLimits(
            rate_per_s=settings.rate_limit_per_s,
            concurrency=settings.concurrency_limit,
            credit_usd=settings.credit_usd,
            retry_after_busy_s=max(1.0, settings.latency_max_s),
            clock=time.monotonic,
        )
        self._webhooks = WebhookSender(
            settings=settings,
            decider=self._decider,
            stats=self.stats,
            background=self._background,
            faults=self._current_faults,
            session=self.session,
        )
        self._lifecycle = Lifecycle(
            settings=settings,
            decider=self._decider,
            stats=self.stats,
            limits=self.limits,
            outputs=self.outputs,
            webhooks=self._webhooks,
            faults=self._current_faults,
        )
        self._log = structlog.get_logger("segflow.sandbox")

    # life of the engine ---------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._background.spawn(self._sweep_outputs(), name="sandbox-output-sweeper")

    async def stop(self) -> None:
        self.holds_released.set()
        await self._background.close()
        if self._session is not None:
            await self._session.close()

    def release_holds(self) -> None:
        """Answer every held create now (tests call this before stopping the server)."""
        self.holds_released.set()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the sandbox engine is not started")
        return self._session

    def set_faults(self, **updates: Any) -> FaultSettings:
        """Change fault settings on the running sandbox; ValueError names a bad field."""
        self.faults = self.faults.with_updates(updates)
        self._log.info("faults_changed", **updates)
        return self.faults

    def _current_faults(self) -> FaultSettings:
        return self.faults

    async def _sweep_outputs(self) -> None:
        interval = min(30.0, max(0.05, self.settings.retention_s / 4))
        while True:
            await asyncio.sleep(interval)
            expired = self.outputs.sweep()
            if expired:
                self._log.debug("outputs_expired", count=expired)

    # the API ---------------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> str:
        if not api_key:
            raise SandboxError(401, "missing x-api-key header")
        if self.settings.api_keys and not any(
            hmac.compare_digest(api_key.encode(), k.encode()) for k in self.settings.api_keys
        ):
            raise SandboxError(401, "invalid api key")
        return api_key

    async def create(self, api_key: str | None, body: object) -> Created:
        """Create a task, or raise SandboxError with the status to answer; rejections are counted."""
        try:
            return await self._create(api_key, body)
        except SandboxError as exc:
            self.stats.creates_rejected[exc.status] += 1
            self._log.info("create_rejected", http_status=exc.status, reason=exc.message)
            raise

    async def _create(self, api_key: str | None, body: object) -> Created:
        key_owner = self.authenticate(api_key)
        request = parse_create(body)
        key = self._decision_key(request)
        faults = self.faults
        self._maybe_inject_create_5xx(key, faults)
        self._maybe_burst_429(key_owner, key, faults)
        self.limits.check_rate_and_concurrency(key_owner)
        self.limits.task_started(key_owner)  # holds the concurrency slot across the image fetch
        try:
            image = await fetch_image(
                self.session(),
                request.image,
                max_bytes=self.settings.max_image_bytes,
                timeout_s=self.settings.fetch_timeout_s,
                max_side_px=self.settings.max_side_px,
            )
            price = price_usd(image.pixels)
            self.limits.reserve(price)
        except BaseException:
            self.limits.task_ended(key_owner)
            raise
        task = SandboxTask(
            task_id=str(uuid.uuid4()),
            key=key,
            owner=key_owner,
            request=request,
            image=image,
            price_usd=price,
            created_mono=time.monotonic(),
        )
        task.create_response = self._response_fate(task, faults)
        self.tasks[task.task_id] = task
        self.stats.tasks_created += 1
        snapshot = task.to_json()
        self._log.info("task_created", task_id=task.task_id, pixels=image.pixels, fate=task.create_response)
        self._webhooks.notify(task)
        task.runner = self._background.spawn(self._lifecycle.run(task), name=f"task-{task.task_id}")
        return Created(task=snapshot, fate=task.create_response)

    def _decision_key(self, request: CreateRequest) -> str:
        """Request fingerprint plus how many times it was seen: the same in every run of the same requests.

        The image URL's host is left out so a loopback image server on an ephemeral port does not
        change the decisions from run to run.
        """
        parts = urlsplit(request.image)
        material = "\x1f".join(
            (parts.path, parts.query, request.prompt, request.negative_prompt, str(request.segment_factor))
        )
        fingerprint = hashlib.sha256(material.encode()).hexdigest()[:16]
        ordinal = self._ordinals[fingerprint]
        self._ordinals[fingerprint] += 1
        return f"{fingerprint}#{ordinal}"

    def _maybe_inject_create_5xx(self, key: str, faults: FaultSettings) -> None:
        if self._decider.chance("create_5xx", key, faults.create_5xx):
            self.stats.faults["create_5xx"] += 1
            status = self._decider.choice("create_5xx_status", key, _INJECTED_5XX)
            raise SandboxError(status, "upstream temporarily unavailable")

    def _maybe_burst_429(self, owner: str, key: str, faults: FaultSettings) -> None:
        # A burst, once started, rejects the next burst_429_length creates of that key whatever they are.
        if self._bursts[owner] <= 0 and self._decider.chance("burst_429", key, faults.burst_429):
            self.stats.faults["burst_429"] += 1
            self._bursts[owner] = faults.burst_429_length
        if self._bursts[owner] > 0:
            self._bursts[owner] -= 1
            raise SandboxError(429, "too many requests", faults.burst_429_retry_after_s)

    def _response_fate(self, task: SandboxTask, faults: FaultSettings) -> str:
        for fault, fate in (("create_lost", "lost"), ("create_hold", "held")):
            if self._decider.chance(fault, task.key, getattr(faults, fault)):
                self.stats.faults[fault] += 1
                task.faults.append(fault)
                return fate
        return "sent"

    def get(self, api_key: str | None, task_id: str) -> dict[str, Any]:
        try:
            task = self._owned(self.authenticate(api_key), task_id)
            self.stats.gets += 1
            ordinal = task.get_count
            task.get_count += 1
            if self._decider.chance("get_5xx", f"{task.key}/get{ordinal}", self.faults.get_5xx):
                self.stats.faults["get_5xx"] += 1
                status = self._decider.choice("get_5xx_status", f"{task.key}/get{ordinal}", _INJECTED_5XX)
                raise SandboxError(status, "upstream temporarily unavailable")
            return task.to_json()
        except SandboxError as exc:
            self.stats.gets_rejected[exc.status] += 1
            raise

    def cancel(self, api_key: str | None, task_id: str) -> dict[str, Any]:
        """Cancel a pending task: it ends `failed` with "task cancelled by user" (only failed and
        completed are final in the contract, so a client never waits on a status it does not know)."""
        task = self._owned(self.authenticate(api_key), task_id)
        if task.status not in _CANCELLABLE:
            raise SandboxError(400, f"only pending tasks can be cancelled; this one is {task.status}")
        if task.runner is not None:
            task.runner.cancel()
        self._lifecycle.fail(task, CANCELLED)
        return task.to_json()

    def _owned(self, owner: str, task_id: str) -> SandboxTask:
        task = self.tasks.get(task_id)
        if task is None or task.owner != owner:
            raise SandboxError(404, "task not found")
        return task

    def output(self, name: str) -> bytes | None:
        data = self.outputs.get(name)
        if data is not None:
            self.stats.outputs_served += 1
        return data

    # introspection ---------------------------------------------------------------------------

    def stats_json(self) -> dict[str, Any]:
        return self.stats.to_json(
            (t.status for t in self.tasks.values()),
            credit_left_usd=self.limits.credit_left_usd,
            outputs_stored=len(self.outputs),
            outputs_expired=self.outputs.expired,
        )

    def tasks_json(self) -> list[dict[str, Any]]:
        return [task.summary() for task in self.tasks.values()]
