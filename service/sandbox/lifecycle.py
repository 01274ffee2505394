"""How one task moves: pending -> processing -> completed or failed, at times fixed by the seed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable

import structlog

from service.sandbox.decisions import Decider
from service.sandbox.limits import AccountLimits
from service.sandbox.masks import MaskSpec, render_mask
from service.sandbox.outputs import OutputStore
from service.sandbox.settings import FaultSettings, SandboxSettings
from service.sandbox.stats import SandboxStats
from service.sandbox.task import (
    CANCELLED_SPELLINGS,
    CONSUME_PER_USD,
    MODEL_FAILED,
    RATE_LIMITED,
    SandboxTask,
    TaskError,
    now,
)
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
        # Staged tasks waiting for a concurrency slot, oldest first: (API key, waiter).
        self._staged: deque[tuple[str, asyncio.Future[None]]] = deque()
        self._log = structlog.get_logger("segflow.sandbox")

    def latency_s(self, key: str) -> float:
        return self._decider.uniform("latency", key, self._settings.latency_min_s, self._settings.latency_max_s)

    async def run(self, task: SandboxTask) -> None:
        """Drive `task` to its terminal state; cancelling this coroutine leaves the task as it is."""
        if not task.holds_slot:  # staged: accepted over the concurrency limit, waits for a slot
            await self._wait_for_slot(task)
        faults = self._faults()
        latency = self.latency_s(task.key)
        begun = time.monotonic()
        end_at = begun + latency
        if self._decider.chance("task_fail_retryable", task.key, faults.task_fail_retryable):
            # A rate-limited task never starts; it fails like webhook-failed-rate-limited.json.
            await sleep_until(end_at)
            self._note_fault(task, "task_fail_retryable")
            self.fail(task, RATE_LIMITED)
            return
        fails = self._decider.chance("task_fail", task.key, faults.task_fail)
        point = self._decider.uniform("processing_point", task.key, 0.1, 0.6)
        await sleep_until(begun + latency * point)
        if self._decider.chance("external_cancel", task.key, faults.external_cancel):
            # Cancelled from the provider's dashboard or by a bulk cancel while still pending.
            self._note_fault(task, "external_cancel")
            self.cancel(task, self._decider.choice("cancel_spelling", task.key, CANCELLED_SPELLINGS))
            return
        if task.bad_image is not None:
            # The create accepted it; the image turns out unusable when the task is run.
            await sleep_until(end_at)
            self.fail(task, TaskError(10000, task.bad_image, (task.bad_image,)))
            return
        self._start(task)
        if fails:
            await sleep_until(end_at)
            self._note_fault(task, "task_fail")
            self.fail(task, MODEL_FAILED)
            return
        pngs = await self._masks_of(task, faults)
        await sleep_until(end_at)
        self._complete(task, pngs, faults)

    async def _wait_for_slot(self, task: SandboxTask) -> None:
        """Wait, staged, until a task of the same account ends and hands its slot over."""
        if self._limits.has_slot(task.owner) and not any(owner == task.owner for owner, _ in self._staged):
            # A slot freed between the create and now, with nobody waiting to be handed it.
            self._limits.task_started(task.owner)
            task.holds_slot = True
            task.status = "pending"
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._staged.append((task.owner, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as it was cancelled
                task.holds_slot = True
                self._release(task)
            elif (task.owner, waiter) in self._staged:
                self._staged.remove((task.owner, waiter))
            raise
        task.holds_slot = True
        task.status = "pending"

    def _release(self, task: SandboxTask) -> None:
        """Give the task's concurrency slot to the oldest staged task of its account, or back."""
        if not task.holds_slot:
            return
        task.holds_slot = False
        for i, (owner, waiter) in enumerate(self._staged):
            if owner == task.owner and not waiter.done():
                del self._staged[i]
                waiter.set_result(None)  # the slot passes on: the active count stays as it is
                return
        self._limits.task_ended(task.owner)

    def _start(self, task: SandboxTask) -> None:
        task.status = "processing"
        task.started_at = now()
        self._log.debug("task_processing", task_id=task.task_id)
        if self._settings.processing_webhook:
            self._webhooks.notify(task)

    async def _masks_of(self, task: SandboxTask, faults: FaultSettings) -> list[bytes]:
        count = faults.multi_mask_count if self._decider.chance("multi_mask", task.key, faults.multi_mask) else 1
        if count > 1:
            self._note_fault(task, "multi_mask")
        return [await self._mask(task, i) for i in range(count)]

    async def _mask(self, task: SandboxTask, index: int) -> bytes:
        spec = MaskSpec(
            image_sha256=task.image.sha256,
            width=task.image.width,
            height=task.image.height,
            # Each further mask of a task is drawn for a variant of its prompt, so they differ.
            prompt=task.request.prompt if index == 0 else f"{task.request.prompt} #{index}",
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

    def _complete(self, task: SandboxTask, pngs: list[bytes], faults: FaultSettings) -> None:
        task.mask_sha256s = [hashlib.sha256(png).hexdigest() for png in pngs]
        if self._decider.chance("base64_outputs", task.key, faults.base64_outputs):
            self._note_fault(task, "base64_outputs")
            task.output_key = "image_base64s"
            task.output_base64s = [base64.b64encode(png).decode() for png in pngs]
        else:
            if self._decider.chance("temporary_urls", task.key, faults.temporary_urls):
                self._note_fault(task, "temporary_urls")
                task.output_key = "temporary_image_urls"
            names = [f"{uuid.uuid4()}.png" for _ in pngs]
            for name, png in zip(names, pngs, strict=True):
                self._outputs.put(name, png, expires_at=task.created_mono + self._settings.retention_s)
            task.output_urls = [f"{self._settings.output_base_url}/temp/{name}" for name in names]
        task.status = "completed"
        task.ended_at = now()
        task.consume = round(task.price_usd * CONSUME_PER_USD)
        self._stats.pixels_total += task.image.pixels
        self._stats.price_usd_total += task.price_usd
        self._release(task)
        self._log.info("task_completed", task_id=task.task_id, pixels=task.image.pixels, masks=len(pngs))
        self._webhooks.notify(task)
        if task.output_urls and self._decider.chance("output_expire_early", task.key, faults.output_expire_early):
            # After the webhook snapshot: the client is told a URL that already answers 404.
            for url in task.output_urls:
                self._outputs.delete(url.rsplit("/", 1)[-1])
            self._note_fault(task, "output_expire_early")

    def fail(self, task: SandboxTask, error: TaskError) -> None:
        """End `task` as failed (also the legacy cancel): nothing is billed."""
        task.status = "failed"
        task.error = error
        self._end_unbilled(task)
        self._log.info("task_failed", task_id=task.task_id, error=error.message)
        self._webhooks.notify(task)

    def cancel(self, task: SandboxTask, spelling: str) -> None:
        """End `task` as cancelled (`cancelled` or `canceled`): nothing is billed."""
        task.status = spelling
        self._end_unbilled(task)
        self._log.info("task_cancelled", task_id=task.task_id, status=spelling)
        self._webhooks.notify(task)

    def _end_unbilled(self, task: SandboxTask) -> None:
        task.ended_at = now()
        self._limits.refund(task.price_usd)
        self._release(task)  # a staged one holds none; its runner, cancelled, leaves the queue

    def _note_fault(self, task: SandboxTask, fault: str) -> None:
        self._stats.faults[fault] += 1
        task.faults.append(fault)
        self._log.info("fault_injected", fault=fault, task_id=task.task_id)
