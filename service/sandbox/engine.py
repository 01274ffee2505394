"""The sandbox engine: the API's operations on tasks, and the background work they start."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from collections.abc import Mapping
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
from service.sandbox.task import CANCELLED, CONSUME_PER_USD, NO_IMAGE, SandboxTask
from service.sandbox.webhooks import WebhookSender
from service.sandbox.wire import MODEL, CreateRequest, SandboxError, parse_create

_CANCELLABLE = frozenset({"pending", "staged"})
_DOCUMENTED_CANCELLABLE = frozenset({"pending"})
HISTORY_MAX_PAGE_SIZE = 100
UNLIMITED_CREDIT_USD = 1_000_000.0
"""The balance shown when the sandbox runs without a credit limit (it still goes down with spend)."""
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
        staged = self.limits.check_rate_and_concurrency(key_owner, stage=self.settings.over_limit == "stage")
        if not staged:
            self.limits.task_started(key_owner)  # holds the concurrency slot across the image fetch
        bad_image: str | None = None
        try:
            try:
                image = await fetch_image(
                    self.session(),
                    request.image,
                    max_bytes=self.settings.max_image_bytes,
                    timeout_s=self.settings.fetch_timeout_s,
                    max_side_px=self.settings.max_side_px,
                )
            except SandboxError as exc:
                if self.settings.bad_image != "fail":
                    raise
                image, bad_image = NO_IMAGE, exc.message  # accepted now, fails when run
            price = price_usd(image.pixels) if bad_image is None else 0.0
            self.limits.reserve(price)
        except BaseException:
            if not staged:
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
            status="staged" if staged else "pending",
            bad_image=bad_image,
            holds_slot=not staged,
        )
        task.create_response = self._response_fate(task, faults)
        self.tasks[task.task_id] = task
        self.stats.tasks_created += 1
        self.stats.tasks_staged += staged
        snapshot = task.to_json()
        if not staged:  # the documented create answer says "" where a GET would say pending
            snapshot["status"] = self.settings.create_status
        self._log.info(
            "task_created", task_id=task.task_id, pixels=image.pixels, fate=task.create_response, status=task.status
        )
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
        """Cancel a task; the answer's envelope, or SandboxError(400) with the reason it cannot be.

        "documented": only a pending task ("once a task has entered the processing state, it can no
        longer be canceled"), answered without data; the task then reads `canceled`.
        "legacy": pending or staged, answered with the task, which ends failed."""
        task = self._owned(self.authenticate(api_key), task_id)
        documented = self.settings.cancel == "documented"
        if task.status not in (_DOCUMENTED_CANCELLABLE if documented else _CANCELLABLE):
            raise SandboxError(400, f"task {task_id} is {task.status} and can no longer be canceled")
        if task.runner is not None:
            task.runner.cancel()
        if not documented:
            self._lifecycle.fail(task, CANCELLED)
            return {"code": 200, "data": task.to_json(), "message": "success"}
        self._lifecycle.cancel(task, "canceled")
        return {"code": 200, "message": f"task {task_id} canceled"}

    def history(self, api_key: str | None, query: Mapping[str, str]) -> dict[str, Any]:
        """GET /api/open/tasks/histories: this key's tasks, oldest first, filtered and paged."""
        owner = self.authenticate(api_key)
        page = _int_param(query, "page", 1)
        size = _int_param(query, "page_size", 10)
        if page < 1 or size < 1:
            raise SandboxError(400, "page and page_size must be at least 1")
        if size > HISTORY_MAX_PAGE_SIZE:
            raise SandboxError(400, f"page_size must be at most {HISTORY_MAX_PAGE_SIZE}")
        start = _int_param(query, "start_time", 0)
        end = _int_param(query, "end_time", 0)
        # The history's model names are spelled like "image_toolkit"; every sandbox task is one.
        model = query.get("model", "").lower().replace("_", "-")
        rows = [
            t
            for t in self.tasks.values()
            if t.owner == owner
            and model in MODEL.lower()
            and t.created_at.timestamp() >= start
            and (not end or t.created_at.timestamp() <= end)
        ]
        chosen = rows[(page - 1) * size : page * size]
        return {
            "code": 200,
            "data": {"tasks": [t.history_row() for t in chosen], "page": page, "page_size": size, "total": len(rows)},
            "message": "success",
        }

    def account(self, api_key: str | None) -> dict[str, Any]:
        """GET /account/info: the balance left (credit minus what completed and running tasks hold)."""
        owner = self.authenticate(api_key)
        left = self.limits.credit_left_usd
        usd = UNLIMITED_CREDIT_USD - self.limits.spent_usd if left is None else left
        return {
            "code": 200,
            "data": {
                "account_name": "sandbox",
                "account_id": hashlib.sha256(owner.encode()).hexdigest()[:12],
                "credits": round(usd * CONSUME_PER_USD),
                "equivalent_in_usd": round(usd, 6),
            },
            "message": "success",
        }

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


def _int_param(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(400, f"{name} must be an integer") from None
