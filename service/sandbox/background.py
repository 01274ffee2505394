"""Fire-and-forget asyncio tasks that are still owned: kept referenced, logged if they crash,
cancelled together at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog


class BackgroundTasks:
    def __init__(self, name: str) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = structlog.get_logger("segflow.sandbox").bind(tasks=name)
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError("background tasks are closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A crash here is a sandbox bug; say so loudly instead of losing it with the task.
            self._log.error("background_task_crashed", name=task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel everything still running and wait for it to finish unwinding."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
