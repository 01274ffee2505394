"""The SQLite side of retention: what the pruner reads, and its deletes, each one small write in
the group commit (so a pruning batch waits its turn and holds the writer only briefly)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from service.store import sqlite_sql as sql
from service.store.base import ExpiredMask, PrunedRow, RetentionCounts

T = TypeVar("T")


def _ids(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


class SqliteRetention:
    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        raise NotImplementedError

    async def pruned_job(self, job_id: str) -> PrunedRow | None:
        row = await self._read(lambda c: c.execute(sql.PRUNED_JOB, (job_id,)).fetchone())
        return PrunedRow(*row) if row else None

    async def pruned_batch(self, batch_id: str) -> PrunedRow | None:
        row = await self._read(lambda c: c.execute(sql.PRUNED_BATCH, (batch_id,)).fetchone())
        return PrunedRow(*row) if row else None

    async def pruned_masks(self, job_id: str) -> dict[int, float]:
        return await self._read(lambda c: dict(c.execute(sql.PRUNED_MASKS_OF_JOB, (job_id,)).fetchall()))

    async def expired_masks(self, *, cutoff: float, limit: int) -> list[ExpiredMask]:
        def fn(c: sqlite3.Connection) -> list[ExpiredMask]:
            (mark,) = c.execute(sql.MASKS_WATERMARK).fetchone()
            return [ExpiredMask(*r) for r in c.execute(sql.EXPIRED_MASKS, (mark, cutoff, limit))]

        return await self._read(fn)

    async def mark_masks_pruned(self, masks: Sequence[ExpiredMask], *, now: float) -> None:
        params = [(m.job_id, m.idx, m.created_at, now) for m in masks]
        await self._write(lambda c: c.executemany(sql.INSERT_PRUNED_MASK, params))

    async def expired_jobs(self, *, cutoff: float, limit: int) -> tuple[list[str], list[str]]:
        def fn(c: sqlite3.Connection) -> tuple[list[str], list[str]]:
            ids = [r[0] for r in c.execute(sql.EXPIRED_JOBS, (cutoff, limit))]
            paths = [r[0] for r in c.execute(sql.UNPRUNED_MASKS_OF_JOBS, (_ids(ids),))] if ids else []
            return ids, paths

        return await self._read(fn)

    async def delete_jobs(self, job_ids: Sequence[str], *, cutoff: float, now: float) -> int:
        def op(c: sqlite3.Connection) -> int:
            still = _ids([r[0] for r in c.execute(sql.STILL_EXPIRED_JOBS, (_ids(job_ids), cutoff))])
            for statement in sql.DELETE_JOB_ROWS:
                c.execute(statement, (still,))
            c.execute(sql.TOMBSTONE_JOBS, (now, still))
            return c.execute(sql.DELETE_JOBS, (still,)).rowcount

        result: int = await self._write(op)
        return result

    async def delete_empty_batches(self, *, cutoff: float, limit: int, now: float) -> int:
        def op(c: sqlite3.Connection) -> int:
            ids = _ids([r[0] for r in c.execute(sql.EMPTY_BATCHES, (cutoff, limit))])
            c.execute(sql.TOMBSTONE_BATCHES, (now, ids))
            return c.execute(sql.DELETE_BATCHES, (ids,)).rowcount

        result: int = await self._write(op)
        return result

    async def delete_outbox(self, *, cutoff: float, limit: int) -> int:
        def op(c: sqlite3.Connection) -> int:
            ids = _ids([r[0] for r in c.execute(sql.EXPIRED_OUTBOX, (cutoff, limit))])
            deleted = 0
            for statement in sql.DELETE_OUTBOX_ROWS:
                deleted = c.execute(statement, (ids,)).rowcount
            return deleted

        result: int = await self._write(op)
        return result

    async def live_input_images(self) -> list[str]:
        return await self._read(lambda c: [r[0] for r in c.execute(sql.LIVE_IMAGES)])

    async def retention_counts(
        self, *, masks_cutoff: float | None, jobs_cutoff: float | None, outbox_cutoff: float | None
    ) -> RetentionCounts:
        def fn(c: sqlite3.Connection) -> RetentionCounts:
            masks = mask_bytes = jobs = events = outbox = 0
            if masks_cutoff is not None:
                (mark,) = c.execute(sql.MASKS_WATERMARK).fetchone()
                masks, mask_bytes = c.execute(sql.COUNT_EXPIRED_MASKS, (mark, masks_cutoff)).fetchone()
            if jobs_cutoff is not None:
                (jobs,) = c.execute(sql.COUNT_EXPIRED_JOBS, (jobs_cutoff,)).fetchone()
                (events,) = c.execute(sql.COUNT_EXPIRED_EVENTS, (jobs_cutoff,)).fetchone()
            if outbox_cutoff is not None:
                (outbox,) = c.execute(sql.COUNT_EXPIRED_OUTBOX, (outbox_cutoff,)).fetchone()
            return RetentionCounts(masks, mask_bytes, jobs, events, outbox)

        return await self._read(fn)
