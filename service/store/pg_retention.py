"""The PostgreSQL side of retention (the same behaviour as sqlite_retention.py): each delete is one
short transaction that skips rows another transaction holds, so the pruner never waits on the
hot path and the hot path waits on the pruner for at most one small batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from service.store import postgres_sql as sql
from service.store.base import ExpiredMask, PrunedRow, RetentionCounts

T = TypeVar("T")


def _count(status: str) -> int:
    """The row count of an asyncpg status string such as 'DELETE 42'."""
    return int(status.rsplit(" ", 1)[-1]) if status and status[-1].isdigit() else 0


class PgRetention:
    async def _read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _tx(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def pruned_job(self, job_id: str) -> PrunedRow | None:
        row = await self._read(lambda c: c.fetchrow(sql.PRUNED_JOB, job_id))
        return PrunedRow(*row) if row else None

    async def pruned_batch(self, batch_id: str) -> PrunedRow | None:
        row = await self._read(lambda c: c.fetchrow(sql.PRUNED_BATCH, batch_id))
        return PrunedRow(*row) if row else None

    async def pruned_masks(self, job_id: str) -> dict[int, float]:
        found = await self._read(lambda c: c.fetch(sql.PRUNED_MASKS_OF_JOB, job_id))
        return {int(r[0]): float(r[1]) for r in found}

    async def expired_masks(self, *, cutoff: float, limit: int) -> list[ExpiredMask]:
        async def fn(c: Any) -> list[ExpiredMask]:
            mark = await c.fetchval(sql.MASKS_WATERMARK)
            return [ExpiredMask(*r) for r in await c.fetch(sql.EXPIRED_MASKS, mark, cutoff, limit)]

        return await self._read(fn)

    async def mark_masks_pruned(self, masks: Sequence[ExpiredMask], *, now: float) -> None:
        params = [(m.job_id, m.idx, m.created_at, now) for m in masks]
        await self._tx(lambda c: c.executemany(sql.INSERT_PRUNED_MASK, params))

    async def expired_jobs(self, *, cutoff: float, limit: int) -> tuple[list[str], list[str]]:
        async def fn(c: Any) -> tuple[list[str], list[str]]:
            ids = [r[0] for r in await c.fetch(sql.EXPIRED_JOBS, cutoff, limit)]
            paths = [r[0] for r in await c.fetch(sql.UNPRUNED_MASKS_OF_JOBS, ids)] if ids else []
            return ids, paths

        return await self._read(fn)

    async def delete_jobs(self, job_ids: Sequence[str], *, cutoff: float, now: float) -> int:
        status = await self._tx(lambda c: c.execute(sql.DELETE_JOBS, list(job_ids), cutoff, now))
        return _count(status)

    async def delete_empty_batches(self, *, cutoff: float, limit: int, now: float) -> int:
        status = await self._tx(lambda c: c.execute(sql.DELETE_EMPTY_BATCHES, cutoff, limit, now))
        return _count(status)

    async def delete_outbox(self, *, cutoff: float, limit: int) -> int:
        async def fn(c: Any) -> int:
            ids = [r[0] for r in await c.fetch(sql.EXPIRED_OUTBOX, cutoff, limit)]
            if not ids:
                return 0
            deliveries = [r[0] for r in await c.fetch(sql.LOCK_FINISHED_DELIVERIES, ids)]
            await c.execute(sql.DELETE_ATTEMPTS, deliveries)
            await c.execute(sql.DELETE_DELIVERIES, deliveries)
            return _count(await c.execute(sql.DELETE_OUTBOX, ids))

        return await self._tx(fn)

    async def live_input_images(self) -> list[str]:
        return [r[0] for r in await self._read(lambda c: c.fetch(sql.LIVE_IMAGES))]

    async def retention_counts(
        self, *, masks_cutoff: float | None, jobs_cutoff: float | None, outbox_cutoff: float | None
    ) -> RetentionCounts:
        async def fn(c: Any) -> RetentionCounts:
            masks = mask_bytes = jobs = events = outbox = 0
            if masks_cutoff is not None:
                mark = await c.fetchval(sql.MASKS_WATERMARK)
                masks, mask_bytes = await c.fetchrow(sql.COUNT_EXPIRED_MASKS, mark, masks_cutoff)
            if jobs_cutoff is not None:
                jobs = await c.fetchval(sql.COUNT_EXPIRED_JOBS, jobs_cutoff)
                events = await c.fetchval(sql.COUNT_EXPIRED_EVENTS, jobs_cutoff)
            if outbox_cutoff is not None:
                outbox = await c.fetchval(sql.COUNT_EXPIRED_OUTBOX, outbox_cutoff)
            return RetentionCounts(int(masks), int(mask_bytes), int(jobs), int(events), int(outbox))

        return await self._read(fn)
