"""Webhook delivery: one asyncio task per delivery so a slow receiver never holds up a task or an
answer, with retries and the injected faults (drop, duplicate, delay, reorder)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson
import structlog

from service.sandbox.background import BackgroundTasks
from service.sandbox.decisions import Decider
from service.sandbox.settings import FaultSettings, SandboxSettings
from service.sandbox.stats import SandboxStats
from service.sandbox.task import SandboxTask


@dataclass(frozen=True)
class Delivery:
    task: SandboxTask
    event: str  # the task status the body shows
    terminal: bool
    body: bytes
    copy: int  # 0 for the original, 1 for an injected duplicate


class WebhookSender:
    def __init__(
        self,
        *,
        settings: SandboxSettings,
        decider: Decider,
        stats: SandboxStats,
        background: BackgroundTasks,
        faults: Callable[[], FaultSettings],
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._settings = settings
        self._decider = decider
        self._stats = stats
        self._background = background
        self._faults = faults
        self._session = session
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._log = structlog.get_logger("segflow.sandbox")

    def notify(self, task: SandboxTask) -> None:
        """Queue the webhook for the task's current state; the body is a snapshot taken now."""
        terminal = task.is_final
        if not task.request.webhook_endpoint:
            if terminal:
                task.terminal_webhook_done.set()
            return
        faults = self._faults()
        key = f"{task.key}/{task.status}"
        if self._decider.chance("webhook_drop", key, faults.webhook_drop):
            self._injected(task, "webhook_drop", "dropped")
            if terminal:
                task.terminal_webhook_done.set()
            return
        wait_for = None
        if self._is_reorder_target(task) and self._decider.chance("webhook_reorder", task.key, faults.webhook_reorder):
            self._injected(task, "webhook_reorder", "reordered")
            wait_for = task.terminal_webhook_done
        delay = 0.0
        if self._decider.chance("webhook_delay", key, faults.webhook_delay):
            self._injected(task, "webhook_delay", "delayed")
            delay = faults.webhook_delay_s
        copies = 1
        if self._decider.chance("webhook_duplicate", key, faults.webhook_duplicate):
            self._injected(task, "webhook_duplicate", "duplicated")
            copies = 2
        body = orjson.dumps({"timestamp": int(time.time()), "data": task.to_json()})
        for copy in range(copies):
            delivery = Delivery(task=task, event=task.status, terminal=terminal, body=body, copy=copy)
            self._background.spawn(
                self._deliver(delivery, delay, wait_for), name=f"webhook-{task.task_id}-{task.status}-{copy}"
            )

    def _is_reorder_target(self, task: SandboxTask) -> bool:
        # The progress webhook sent just before the terminal one is the one a reorder moves after it.
        target = "processing" if self._settings.processing_webhook else "pending"
        return task.status == target

    def _injected(self, task: SandboxTask, fault: str, counter: str) -> None:
        self._stats.faults[fault] += 1
        self._stats.webhooks[counter] += 1
        task.faults.append(fault)
        self._log.info("fault_injected", fault=fault, task_id=task.task_id, status=task.status)

    async def _deliver(self, delivery: Delivery, delay: float, wait_for: asyncio.Event | None) -> None:
        try:
            if wait_for is not None:
                await wait_for.wait()
            if delay:
                await asyncio.sleep(delay)
            for attempt in range(self._settings.webhook_retries + 1):
                if attempt:
                    self._stats.webhooks["retried"] += 1
                    await asyncio.sleep(self._settings.webhook_retry_interval_s)
                if await self._post(delivery, attempt):
                    self._stats.webhooks["delivered"] += 1
                    delivery.task.webhooks_delivered += 1
                    delivery.task.webhooks_acked.append((delivery.event, time.time()))
                    return
            self._stats.webhooks["failed"] += 1
            self._log.warning(
                "webhook_gave_up",
                task_id=delivery.task.task_id,
                status=delivery.event,
                attempts=self._settings.webhook_retries + 1,
            )
        finally:
            if delivery.terminal and delivery.copy == 0:
                delivery.task.terminal_webhook_done.set()

    async def _post(self, delivery: Delivery, attempt: int) -> bool:
        request = delivery.task.request
        headers = {"content-type": "application/json", "user-agent": "segflow-sandbox"}
        if request.webhook_secret:
            headers["x-webhook-secret"] = request.webhook_secret
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout_s)
        log = self._log.bind(task_id=delivery.task.task_id, status=delivery.event, attempt=attempt + 1)
        async with self._slots:
            self._stats.webhooks["sent"] += 1
            delivery.task.webhook_attempts += 1
            try:
                async with self._session().post(
                    request.webhook_endpoint, data=delivery.body, headers=headers, timeout=timeout
                ) as response:
                    await response.read()
                    answer = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("webhook_attempt_failed", reason=type(exc).__name__)
                return False
        if 200 <= answer < 300:
            log.debug("webhook_delivered", http_status=answer)
            return True
        log.info("webhook_attempt_failed", http_status=answer)
        return False
