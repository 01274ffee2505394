"""Retention on both databases and both artifact backends: what is older than its retention goes,
rows and objects alike; what is fresh stays, event log and all; pruned things answer 410."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence

import aiohttp
import asyncpg
import pytest

from service.artifacts import input_key, mask_key, one_chunk
from service.jobs import JobInput
from service.pruner import Pruning
from tests.fixtures.api import Api, failed, png, succeeded

DAY = 86_400.0


@pytest.fixture
def api(api_on_each_backend: Api) -> Api:
    return api_on_each_backend


async def age(api: Api, job_ids: Sequence[str], days: float) -> None:
    """Move the jobs' clocks `days` into the past: as if they had run and finished back then.
    (Straight SQL on the test's database, beside the running store: time passing is not an API.)"""
    d = days * DAY
    ids = ", ".join(f"'{j}'" for j in job_ids)  # uuids made by the store
    statements = [
        f"UPDATE artifacts SET created_at = created_at - {d} WHERE job_id IN ({ids})",
        f"UPDATE jobs SET finished_at = finished_at - {d}, created_at = created_at - {d} WHERE id IN ({ids})",
        f"UPDATE outbox SET created_at = created_at - {d} WHERE job_id IN ({ids})",
        f"UPDATE batches SET created_at = created_at - {d} WHERE id IN (SELECT batch_id FROM jobs WHERE id IN ({ids}))",
    ]
    url = api.services.settings.database_url
    if url.startswith("sqlite:///"):

        def run() -> None:
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            try:
                with conn:
                    for s in statements:
                        conn.execute(s)
            finally:
                conn.close()

        await asyncio.to_thread(run)
        return
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for s in statements:
                await conn.execute(s)
    finally:
        await conn.close()


async def new_batch(api: Api, n: int) -> tuple[str, list[str]]:
    created = await api.submit(n=n)
    return created["batch_id"], [j["job_id"] for j in created["jobs"]]


async def test_expired_rows_and_objects_go_and_fresh_ones_stay(api: Api) -> None:
    services, store = api.services, api.services.store
    old_batch, old = await new_batch(api, 3)
    await succeeded(services, old[0], png(2, 2))
    await succeeded(services, old[1], png(3, 3))
    await failed(services, old[2])
    _, (middle,) = await new_batch(api, 1)
    await succeeded(services, middle, png(4, 4))
    fresh_batch, (fresh,) = await new_batch(api, 1)
    await succeeded(services, fresh, png(5, 5))
    old_link = (await api.call("GET", f"/v1/jobs/{old[0]}")).body["artifact"]["download_url"]
    await age(api, old, 100)  # past every retention
    await age(api, [middle], 40)  # past the masks' and the outbox's 30 days, within the jobs' 90
    kept_events = {j: await store.job_events(j) for j in (middle, fresh)}
    old_objects = [mask_key("acme", j, 0) for j in old[:2]]
    assert all([await services.artifacts.exists(k) for k in old_objects])

    pruning = Pruning(store, services.artifacts, services.settings)
    plan = await pruning.plan()
    assert (plan.rows.jobs, plan.rows.masks, plan.rows.outbox) == (3, 3, 4)
    report = await pruning.run()
    assert (report.jobs, report.masks, report.outbox, report.batches) == (3, 3, 4, 1)

    for job_id in old:
        gone = await api.call("GET", f"/v1/jobs/{job_id}")
        assert (gone.status, gone.error) == (410, "job_pruned")
        assert (await api.call("GET", f"/v1/jobs/{job_id}", tenant="globex")).status == 404  # not theirs
        assert await store.job_events(job_id) == [] and await store.job_tasks(job_id) == []
    assert (await api.call("GET", f"/v1/batches/{old_batch}")).error == "batch_pruned"
    assert (await api.call("GET", f"/v1/batches/{old_batch}/manifest")).status == 410
    assert not any([await services.artifacts.exists(k) for k in old_objects])
    async with aiohttp.ClientSession() as http, http.get(old_link) as resp:
        assert resp.status == 410 and (await resp.json())["error"] == "job_pruned"

    kept = (await api.call("GET", f"/v1/jobs/{middle}")).body
    assert kept["state"] == "succeeded" and kept["artifact"]["pruned_at"] is not None
    assert kept["artifact"]["download_url"] is None
    assert not await services.artifacts.exists(mask_key("acme", middle, 0))
    mask = await api.call("GET", f"/v1/jobs/{fresh}/mask")
    assert (mask.status, mask.raw) == (200, png(5, 5))
    assert (await api.call("GET", f"/v1/batches/{fresh_batch}")).status == 200
    for job_id, events in kept_events.items():
        assert await store.job_events(job_id) == events  # the event log of a kept job is intact
    outbox = {e.job_id for e in await store.list_events("acme", since=0.0, limit=100)}
    assert fresh in outbox and middle not in outbox and not outbox & set(old)

    again = await pruning.run()
    assert not any(again.as_dict().values())


async def test_inputs_go_once_no_live_job_needs_them(api: Api) -> None:
    services = api.services
    base = services.settings.public_url
    names = ["a" * 64 + ".png", "b" * 64 + ".png"]
    for name in names:
        await services.artifacts.write(input_key(name), one_chunk(png()), max_bytes=10_000, content_type="image/png")
    _, jobs, _ = await services.store.create_batch(
        "acme",
        [JobInput(f"{base}/inputs/{names[0]}", "cat")],
        callback_url=None,
        idempotency_key=None,
        request_hash="h",
        now=time.time(),
    )
    only_inputs = services.settings.replace(
        retention_masks_days=0, retention_jobs_days=0, retention_outbox_days=0, retention_inputs_days=7
    )
    pruning = Pruning(services.store, services.artifacts, only_inputs)
    assert (await pruning.run(now=time.time() + 6 * DAY)).inputs == 0
    report = await pruning.run(now=time.time() + 8 * DAY)
    assert report.inputs == 1
    assert await services.artifacts.exists(input_key(names[0]))  # a queued job still needs it
    assert not await services.artifacts.exists(input_key(names[1]))
    assert (await api.call("GET", f"/inputs/{names[1]}", tenant=None)).status == 404
    await failed(services, jobs[0].id)
    assert (await pruning.run(now=time.time() + 8 * DAY)).inputs == 1
    assert not await services.artifacts.exists(input_key(names[0]))


async def test_zero_keeps_forever(api: Api) -> None:
    _, (job,) = await new_batch(api, 1)
    await succeeded(api.services, job, png())
    await age(api, [job], 10_000)
    forever = api.services.settings.replace(
        retention_masks_days=0, retention_jobs_days=0, retention_outbox_days=0, retention_inputs_days=0
    )
    report = await Pruning(api.services.store, api.services.artifacts, forever).run()
    assert not any(report.as_dict().values())
    assert (await api.call("GET", f"/v1/jobs/{job}/mask")).status == 200


async def test_prune_dry_run_prints_what_would_go_and_changes_nothing(api: Api) -> None:
    _, jobs = await new_batch(api, 2)
    for job in jobs:
        await succeeded(api.services, job, png())
    await age(api, jobs, 100)
    s = api.services.settings
    env = {
        **os.environ,
        "SEGFLOW_DATABASE_URL": s.database_url,
        "SEGFLOW_ARTIFACT_DIR": s.artifact_dir,
        "SEGFLOW_ARTIFACT_URL": s.artifact_url,
        "SEGFLOW_S3_ENDPOINT_URL": s.s3_endpoint_url,
        "COLUMNS": "200",
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli", "prune", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "dry run: nothing changed" in out.stdout
    assert "2 with 10 events" in out.stdout  # accepted, claimed, created, completed, stored per job
    assert (await api.call("GET", f"/v1/jobs/{jobs[0]}")).status == 200
    assert await api.services.artifacts.exists(mask_key("acme", jobs[0], 0))
