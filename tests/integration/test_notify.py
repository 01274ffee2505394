"""LISTEN/NOTIFY: work written by one replica wakes the workers of another at once, not at their
next polling interval."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.jobs import JobInput
from service.states import State
from service.store import open_store_for


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_batch_written_elsewhere_wakes_this_replicas_submitter(
    sandbox: Any, segflow: Any, database_url: str
) -> None:
    sb = await sandbox()
    # Polling alone would not look again for 60 s.
    sf = await segflow(sb.url, roles=("submitter",), submit_interval_s=60.0)
    await asyncio.sleep(0)  # let the submitter's first (empty) round start
    other_replica = open_store_for(database_url)
    await other_replica.open()
    try:
        _, jobs, _ = await other_replica.create_batch(
            "acme",
            [JobInput(sb.sample_url(), "car")],
            callback_url=None,
            idempotency_key=None,
            request_hash="h",
            now=0.0,
        )
    finally:
        await other_replica.close()
    deadline = asyncio.get_running_loop().time() + 10
    while (job := await sf.store.get_job(jobs[0].id)) is not None and job.state is State.QUEUED:
        assert asyncio.get_running_loop().time() < deadline, "the NOTIFY did not wake the submitter"
        await asyncio.sleep(0.05)
