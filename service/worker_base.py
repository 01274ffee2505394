"""The shape every background worker shares: loop until stopped, do one round, then wait until
woken or the interval passes; stop() lets in-flight work finish up to a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

from service.context import Services
from service.store import StoreError
from service.wakeup import Topic


class Worker:
    name = "worker"
    topic: Topic = Topic.RECONCILE

    def __init__(self, services: Services) -> None:
        self.services = services
        self.log = structlog.get_logger(f"segflow.{self.name}").bind(instance=services.instance_id)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    @property
    def interval(self) -> float:
        raise NotImplementedError

    async def round(self) -> bool:
        """One round of work; True if there may be more right away."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.services.wakeup.notify(self.topic)
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in the background, tracked so stop() can wait for it."""
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not self._stopping.is_set():
            # A freed slot is room for the next item now, not after the interval: without this a
            # worker at its concurrency limit did one batch per interval (8 masks a second).
            self.services.wakeup.notify(self.topic)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, StoreError):  # its lease lapses and the work is claimed again
            self.log.warning("work_item_store_unavailable", error=str(error))
        elif error is not None:
            self.log.error("work_item_crashed", error=repr(error), exc_info=error)

    async def _run(self) -> None:
        self.log.info("worker_started")
        while not self._stopping.is_set():
            more = False
            try:
                more = await self.round()
            except StoreError as exc:
                self.log.warning("worker_store_unavailable", error=str(exc))
            except Exception as exc:  # a bad round is logged; the worker lives on
                self.log.error("worker_round_failed", error=repr(exc), exc_info=exc)
            if not more and not self._stopping.is_set():
                await self.services.wakeup.wait(self.topic, self.interval)
        self.log.info("worker_stopped")
