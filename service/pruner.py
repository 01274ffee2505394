"""Retention: the `pruner` role deletes what is older than each kind's retention, in small batches
on both databases, and removes the stored objects nothing references any more.

Kinds and their clocks (SEGFLOW_RETENTION_*_DAYS, 0 = keep forever):
- masks: the object of a stored mask, counted from when it was stored; the artifact row stays, so
  the job still shows the mask's sha256 and size, and its link answers 410;
- jobs: a final job with its attempts, event log and artifact rows (and its masks' objects),
  counted from when it finished; it leaves a tombstone so the API answers 410, not 404. A batch
  goes (tombstoned too) once its last job has;
- outbox: a sent event with its deliveries and attempts (an event still being delivered stays);
- inputs: uploaded input images, by when they were last uploaded, except those a job not yet
  final still needs.
Objects are deleted before the rows that name them: a crash in between leaves rows whose objects
are gone (the next round finishes them), never objects that no row names. Staged uploads a crash
left behind are removed after a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from service.artifacts import STAGING, ArtifactBackend
from service.context import Services
from service.jobs import RetentionCounts
from service.settings import Settings
from service.store import Store
from service.wakeup import Topic
from service.worker_base import Worker

DAY_S = 86_400.0
STAGING_MAX_AGE_S = DAY_S
DELETE_CHUNK = 1000  # keys per object-store delete request (the S3 limit)
DUTY = 0.1
"""At most this share of the pruner's time goes to deleting: after a batch that took t seconds it
pauses 9t (at least SEGFLOW_PRUNE_PAUSE_S), so a backlog of a million rows drains steadily (a few
hundred jobs a second) without taking the database writer, the disk or the event loop from the
webhooks (benchmarks/retention.py)."""


@dataclass
class PruneReport:
    masks: int = 0
    jobs: int = 0
    batches: int = 0
    outbox: int = 0
    inputs: int = 0
    staged: int = 0
    objects: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass(frozen=True)
class Cutoffs:
    masks: float | None
    jobs: float | None
    outbox: float | None
    inputs: float | None

    @classmethod
    def of(cls, s: Settings, now: float) -> Cutoffs:
        def cut(days: float) -> float | None:
            return now - days * DAY_S if days > 0 else None

        return cls(
            cut(s.retention_masks_days),
            cut(s.retention_jobs_days),
            cut(s.retention_outbox_days),
            cut(s.retention_inputs_days),
        )


@dataclass
class Plan:
    """What a round would delete now: `segflow prune --dry-run`."""

    cutoffs: Cutoffs
    rows: RetentionCounts
    inputs: list[str] = field(default_factory=list)
    input_bytes: int = 0
    staged: int = 0


class Pruning:
    """One pruning round over a store and an artifact backend (the role, and `segflow prune`)."""

    def __init__(self, store: Store, artifacts: ArtifactBackend, settings: Settings) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.stopping = asyncio.Event()
        self._started = time.perf_counter()

    async def run(self, now: float | None = None) -> PruneReport:
        now = time.time() if now is None else now
        cut = Cutoffs.of(self.settings, now)
        report = PruneReport()
        if cut.masks is not None:
            await self._masks(cut.masks, now, report)
        if cut.jobs is not None:
            await self._jobs(cut.jobs, now, report)
        if cut.outbox is not None:
            await self._outbox(cut.outbox, report)
        if cut.inputs is not None:
            await self._inputs(cut.inputs, report)
        staged = [o.key for o in await self.artifacts.list_older(STAGING, now - STAGING_MAX_AGE_S)]
        await self._delete_objects(staged, report)
        report.staged = len(staged)
        return report

    async def plan(self, now: float | None = None) -> Plan:
        now = time.time() if now is None else now
        cut = Cutoffs.of(self.settings, now)
        rows = await self.store.retention_counts(masks_cutoff=cut.masks, jobs_cutoff=cut.jobs, outbox_cutoff=cut.outbox)
        plan = Plan(cut, rows)
        if cut.inputs is not None:
            live = await self._live_inputs()
            old = [o for o in await self.artifacts.list_older("inputs", cut.inputs) if o.key not in live]
            plan.inputs = [o.key for o in old]
            plan.input_bytes = sum(o.size for o in old)
        plan.staged = len(await self.artifacts.list_older(STAGING, now - STAGING_MAX_AGE_S))
        return plan

    async def _masks(self, cutoff: float, now: float, report: PruneReport) -> None:
        while not self.stopping.is_set():
            self._started = time.perf_counter()
            masks = await self.store.expired_masks(cutoff=cutoff, limit=self.settings.prune_batch)
            if not masks:
                return
            await self._delete_objects([m.path for m in masks], report)
            await self.store.mark_masks_pruned(masks, now=now)
            report.masks += len(masks)
            if len(masks) < self.settings.prune_batch:
                return
            await self._pause()

    async def _jobs(self, cutoff: float, now: float, report: PruneReport) -> None:
        while not self.stopping.is_set():
            self._started = time.perf_counter()
            ids, paths = await self.store.expired_jobs(cutoff=cutoff, limit=self.settings.prune_batch)
            if not ids:
                break
            await self._delete_objects(paths, report)
            deleted = await self.store.delete_jobs(ids, cutoff=cutoff, now=now)
            report.jobs += deleted
            if deleted == 0 or len(ids) < self.settings.prune_batch:
                break  # the rest are held by another transaction or were retried: next round
            await self._pause()
        while not self.stopping.is_set():
            self._started = time.perf_counter()
            gone = await self.store.delete_empty_batches(cutoff=cutoff, limit=self.settings.prune_batch, now=now)
            report.batches += gone
            if gone < self.settings.prune_batch:
                return
            await self._pause()

    async def _outbox(self, cutoff: float, report: PruneReport) -> None:
        while not self.stopping.is_set():
            self._started = time.perf_counter()
            gone = await self.store.delete_outbox(cutoff=cutoff, limit=self.settings.prune_batch)
            report.outbox += gone
            if gone < self.settings.prune_batch:
                return
            await self._pause()

    async def _inputs(self, cutoff: float, report: PruneReport) -> None:
        live = await self._live_inputs()
        old = [o.key for o in await self.artifacts.list_older("inputs", cutoff) if o.key not in live]
        await self._delete_objects(old, report)
        report.inputs += len(old)

    async def _live_inputs(self) -> set[str]:
        """Keys of uploaded inputs that jobs not yet final still name."""
        images = await self.store.live_input_images()
        return {"inputs/" + url.rsplit("/inputs/", 1)[1] for url in images if "/inputs/" in url}

    async def _delete_objects(self, keys: Iterable[str], report: PruneReport) -> None:
        batch = list(keys)
        for start in range(0, len(batch), DELETE_CHUNK):
            await self.artifacts.delete(batch[start : start + DELETE_CHUNK])
        report.objects += len(batch)

    async def _pause(self) -> None:
        """Leave the database to the hot path between batches (and stop promptly when asked)."""
        spent = time.perf_counter() - self._started
        pause = max(self.settings.prune_pause_s, spent * (1 - DUTY) / DUTY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), pause)


class Pruner(Worker):
    name = "pruner"
    topic = Topic.PRUNE

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.pruning = Pruning(self.services.store, self.services.artifacts, self.services.settings)

    @property
    def interval(self) -> float:
        return self.services.settings.prune_interval_s

    async def stop(self, timeout: float = 10.0) -> None:
        self.pruning.stopping.set()
        await super().stop(timeout)

    async def round(self) -> bool:
        started = time.perf_counter()
        report = await self.pruning.run()
        if any(report.as_dict().values()):
            self.log.info("pruned", **report.as_dict(), seconds=round(time.perf_counter() - started, 2))
        return False
