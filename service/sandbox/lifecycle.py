"""How one task moves: pending -> processing -> completed or failed, at times fixed by the seed."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

import structlog

from service.sandbox.decisions import Decider
from service.sandbox.limits import AccountLimits
from service.sandbox.masks import MaskSpec, render_mask
from service.sandbox.outputs import OutputStore
from service.sandbox.settings import FaultSettings, SandboxSettings
from service.sandbox.stats import SandboxStats
from service.sandbox.task import CONSUME_PER_USD, MODEL_FAILED, RATE_LIMITED, SandboxTask, TaskError, now
from service.sandbox.webhooks import WebhookSender

_MASK_CACHE_SIZE = 32


async def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches `deadline` (asyncio's clock is the same one)."""
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class Lifecycle:
    """Runs tasks and ends them; the engine owns the tasks, this owns what happens to them over time."""

    def __init__(
        self,
        *,
        settings: SandboxSettings,
        decider: Decider,
        stats: SandboxStats,
        limits: AccountLimits,
        outputs: OutputStore,
        webhooks: WebhookSender,
        faults: Callable[[], FaultSettings],
    ) -> None:
        self._settings = settings
        self._decider = decider
        self._stats = stats
        self._limits = limits
        self._outputs = outputs
        self._webhooks = webhooks
        self._faults = faults
        # Benchmarks send the same image and prompt many times; PNG encoding is the costly part.
        self._masks: OrderedDict[MaskSpec, bytes] = OrderedDict()
        self._log = structlog.get_logger("segflow.sandbox")

    def latency_s(self, key: str) -> float:
        return self._decider.uniform("latency", key, self._settings.latency_min_s, self._settings.latency_max_s)

    async def run(self, task: SandboxTask) -> None:
        """Drive `task` to its terminal state; cancelling this coroutine leaves the task as it is."""
        faults = self._faults()
        latency = self.latency_s(task.key)
        end_at = task.created_mono + latency
        if self._decider.chance("task_fail_retryable", task.key, faults.task_fail_retryable):
            # A rate-limited task never starts; it fails like webhook-failed-rate-limited.json.
            await sleep_until(end_at)
            self._note_fault(task, "task_fail_retryable")
            self.fail(task, RATE_LIMITED)
            return
        fails = self._decider.chance("task_fail", task.key, faults.task_fail)
        point = self._decider.uniform("processing_point", task.key, 0.1, 0.6)
        await sleep_until(task.created_mono + latency * point)
        self._start(task)
        if fails:
            await sleep_until(end_at)
            self._note_fault(task, "task_fail")
            self.fail(task, MODEL_FAILED)
            return
        png = await self._mask(task)
        await sleep_until(end_at)
        self._complete(task, png)

    def _start(self, task: SandboxTask) -> None:
        task.status = "processing"
        task.started_at = now()
        self._log.debug("task_processing", task_id=task.task_id)
        if self._settings.processing_webhook:
            self._webhooks.notify(task)

    async def _mask(self, task: SandboxTask) -> bytes:
        spec = MaskSpec(
            image_sha256=task.image.sha256,
            width=task.image.width,
            height=task.image.height,
            prompt=task.request.prompt,
            negative_prompt=task.request.negative_prompt,
            segment_factor=task.request.segment_factor,
        )
        png = self._masks.get(spec)
        if png is None:
            # Drawing and encoding a 3072x3072 PNG takes tens of ms: keep the event loop free meanwhile.
            png = await asyncio.to_thread(render_mask, spec)
            self._masks[spec] = png
            if len(self._masks) > _MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(spec)
        return png

    def _complete(self, task: SandboxTask, png: bytes) -> None:
        name = f"{uuid.uuid4()}.png"
        self._outputs.put(name, png, expires_at=task.created_mono + self._settings.retention_s)
        task.output_url = f"{self._settings.base_url}/temp/{name}"
        task.mask_sha256 = hashlib.sha256(png).hexdigest()
        task.status = "completed"
        task.ended_at = now()
        task.consume = round(task.price_usd * CONSUME_PER_USD)
        self._stats.pixels_total += task.image.pixels
        self._stats.price_usd_total += task.price_usd
        self._limits.task_ended(task.owner)
        self._log.info("task_completed", task_id=task.task_id, pixels=task.image.pixels)
        self._webhooks.notify(task)
        if self._decider.chance("output_expire_early", task.key, self._faults().output_expire_early):
            # After the webhook snapshot: the client is told a URL that already answers 404.
            self._outputs.delete(name)
            self._note_fault(task, "output_expire_early")

    def fail(self, task: SandboxTask, error: TaskError) -> None:
        """End `task` as failed (also used for cancel): nothing is billed."""
        task.status = "failed"
        task.error = error
        task.ended_at = now()
        self._limits.refund(task.price_usd)
        self._limits.task_ended(task.owner)
        self._log.info("task_failed", task_id=task.task_id, error=error.message)
        self._webhooks.notify(task)

    def _note_fault(self, task: SandboxTask, fault: str) -> None:
        self._stats.faults[fault] += 1
        task.faults.append(fault)
        self._log.info("fault_injected", fault=fault, task_id=task.task_id)
