"""The artifact fetcher: copies each completed job's masks into segflow's artifact store before the
upstream deletes them, then marks the job succeeded with the mask's hash, size and price."""

from __future__ import annotations

import asyncio
import time

from service.artifacts import ArtifactCorrupt, ArtifactUnavailable, mask_key, one_chunk
from service.backoff import Backoff
from service.changes import apply
from service.context import Services
from service.download import (
    Downloaded,
    DownloadError,
    DownloadGone,
    DownloadInvalid,
    DownloadPolicy,
    download_image,
)
from service.inline_outputs import inline_image, is_inline, source_of
from service.jobs import ArtifactRow, Change, JobRow, TaskRow
from service.pricing import price_usd
from service.states import Event, State
from service.upstream.errors import UpstreamError
from service.upstream.wire import TaskStatus
from service.urlguard import GuardedSession, output_policy
from service.wakeup import Topic
from service.worker_base import Worker

GIVE_UP_AFTER_S = 3600.0
"""A mask that could not be downloaded for this long after completion fails the job."""


class Fetcher(Worker):
    name = "fetcher"
    topic = Topic.FETCH

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        s = services.settings
        self.policy = DownloadPolicy(
            urls=output_policy(s),
            max_bytes=s.artifact_max_bytes,
            timeout_s=s.download_timeout_s,
            max_redirects=s.download_max_redirects,
        )
        self.backoff = Backoff(2.0, 300.0)
        self._stored = services.metrics.downloads.labels(result="stored")  # every job's: looked up once
        self.owner = f"{services.instance_id}:fetcher"
        # Output URLs are often signed: their spans record them without the query string.
        self.http = GuardedSession(
            self.policy.urls.allow_private, limit=64, trace_configs=services.tracing.client_trace_configs()
        )

    @property
    def interval(self) -> float:
        return self.services.settings.fetch_interval_s

    async def stop(self, timeout: float = 10.0) -> None:
        await super().stop(timeout)
        await self.http.close()

    async def round(self) -> bool:
        s = self.services.settings
        free = s.fetch_concurrency - len(self._inflight)
        if free <= 0:
            return False
        jobs = await self.services.store.claim_fetching(
            self.owner, now=time.time(), limit=min(free, s.fetch_batch), lease_s=s.fetch_lease_s
        )
        for job in jobs:
            self.spawn(self.fetch(job))
        return len(jobs) == min(free, s.fetch_batch)

    async def fetch(self, job: JobRow) -> None:
        attributes = {"segflow.job.id": job.id, "segflow.task.id": job.task_id or "", "segflow.attempt": job.attempt}
        with self.services.tracing.job_span("segflow.fetch", job.trace_context, attributes):
            await self._fetch(job)

    async def _fetch(self, job: JobRow) -> None:
        log = self.log.bind(job_id=job.id, task_id=job.task_id)
        urls = job.output_urls or await self._fresh_urls(job)
        try:
            try:
                got = await self._download_all(urls)
            except DownloadGone:
                fresh = await self._fresh_urls(job)
                if not fresh or fresh == urls:
                    raise
                log.info("outputs_refreshed", count=len(fresh))
                urls, got = fresh, await self._download_all(fresh)
        except DownloadGone as exc:
            await self._fail(job, "output_expired", str(exc))
            return
        except DownloadInvalid as exc:
            await self._fail(job, "output_invalid", str(exc))
            return
        except (DownloadError, UpstreamError) as exc:
            await self._later(job, str(exc))
            return
        if not got:
            await self._later(job, "no output URLs yet")
            return
        try:
            await self._store(job, urls, got)
        except (ArtifactUnavailable, ArtifactCorrupt, OSError) as exc:  # storage down or full: retry later
            await self._later(job, f"storing the mask: {exc}")

    async def _download_all(self, urls: tuple[str, ...]) -> list[Downloaded]:
        return list(await asyncio.gather(*(self._one(u) for u in urls)))

    async def _one(self, url: str) -> Downloaded:
        if is_inline(url):
            return await inline_image(url, self.policy)
        return await download_image(self.http.get(), url, self.policy)

    async def _fresh_urls(self, job: JobRow) -> tuple[str, ...]:
        """Ask the upstream again: it may hand out new URLs for outputs whose links expired."""
        if not job.task_id:
            return ()
        try:
            snap = await self.services.upstream.get_task(job.task_id)
        except UpstreamError:
            return ()
        return snap.output_urls if snap.status is TaskStatus.COMPLETED else ()

    async def _store(self, job: JobRow, urls: tuple[str, ...], got: list[Downloaded]) -> None:
        artifacts = []
        now = time.time()
        inline = 0
        for idx, (url, item) in enumerate(zip(urls, got, strict=True)):
            relative = mask_key(job.tenant, job.id, idx)
            stored = await self.services.artifacts.write(
                relative, one_chunk(item.data), max_bytes=len(item.data), content_type=item.content_type
            )
            if stored.sha256 != item.sha256:  # what was written is not what was checked: try again later
                raise ArtifactCorrupt(f"mask {idx} of {job.id} changed while being stored")
            artifacts.append(
                ArtifactRow(
                    job.id,
                    idx,
                    item.sha256,
                    len(item.data),
                    item.width,
                    item.height,
                    relative,
                    source_of(url, inline),
                    item.content_type,
                    now,
                )
            )
            inline += is_inline(url)
        pixels = got[0].width * got[0].height
        change = Change(
            Event.STORED,
            "fetcher",
            set={
                "pixels": pixels,
                "price_usd": price_usd(pixels),
                "output_urls": urls,
                "error_code": None,
                "error_message": None,
            },
            artifacts=artifacts,
            detail={"sha256": got[0].sha256, "bytes": len(got[0].data)},
        )
        outcome = await self._write(job, change)
        if outcome:
            m = self.services.metrics
            m.download_bytes.inc(sum(len(g.data) for g in got))
            m.add_spend(job.tenant, price_usd(pixels))
            self._stored.inc()
            if job.completed_at:
                m.completion_to_stored.observe(max(0.0, time.time() - job.completed_at))
            self.log.info("mask_stored", job_id=job.id, sha256=got[0].sha256, pixels=pixels)

    async def _fail(self, job: JobRow, code: str, message: str) -> None:
        self.services.metrics.downloads.labels(result=code).inc()
        self.log.warning("mask_unavailable", job_id=job.id, reason=code, error=message)
        await self._write(
            job,
            Change(Event.OUTPUT_GONE, "fetcher", set={"error_code": code, "error_message": message[:500]}),
        )

    async def _later(self, job: JobRow, message: str) -> None:
        """Release the job to be fetched again after a backoff, or give up after an hour."""
        self.services.metrics.downloads.labels(result="retry").inc()
        if job.completed_at and time.time() - job.completed_at > GIVE_UP_AFTER_S:
            await self._fail(job, "download_failed", message)
            return
        tries = int((time.time() - (job.completed_at or time.time())) // 2) + 1
        delay = self.backoff.delay(min(tries.bit_length(), 8))
        self.log.info("mask_fetch_retry", job_id=job.id, error=message, retry_in_s=round(delay, 2))
        await self._write(
            job,
            Change(
                None,
                "fetcher",
                set={"lease_owner": None, "lease_until": time.time() + delay, "error_message": message[:500]},
            ),
        )

    async def _write(self, job: JobRow, change: Change) -> bool:
        def decide(current: JobRow | None, _task: TaskRow | None) -> Change | None:
            held = current is not None and current.state is State.FETCHING and current.lease_owner == self.owner
            return change if held else None

        return (await apply(self.services, job.id, decide, source="fetcher")).applied
