"""PostgreSQL lost mid-batch (every connection killed and new ones refused for a while): segflow
answers 503 to webhooks it cannot make durable, reconnects by itself, and loses nothing."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest

from service.invariants import check_run
from tests.fixtures.database import postgres_dsn
from tests.integration.test_flow import sandbox_tasks, submit, wait_done

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"


async def outage(database: str, *, on: bool) -> None:
    """Refuse (or allow again) connections to one test database, killing the live ones."""
    dsn = postgres_dsn()
    assert dsn is not None
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"false" if on else "true"}')
        if on:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
    finally:
        await admin.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_database_outage_gets_503_then_everything_completes(
    sandbox: Any, segflow: Any, database_url: str
) -> None:
    database = urlsplit(database_url).path.lstrip("/")
    sb = await sandbox(latency_min_s=0.3, latency_max_s=1.0, webhook_retry_interval_s=0.5, webhook_retries=8)
    sf = await segflow(sb.url)
    batch_id, job_ids = await submit(sf, sb, 60)
    deadline = asyncio.get_running_loop().time() + 30
    while (await sf.client.get_batch(batch_id))["counts"]["succeeded"] < 5:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)

    await outage(database, on=True)
    try:
        body = orjson.loads((DATA / "webhook-completed.json").read_bytes())
        delivery = copy.deepcopy(body)
        delivery["data"]["task_id"] = "00000000-0000-0000-0000-00000000beef"
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{sf.url}/webhooks/qubico/{job_ids[-1]}",
                data=orjson.dumps(delivery),
                headers={"x-webhook-secret": sf.services.secrets.derive(job_ids[-1], 1)},
            ) as resp:
                assert resp.status == 503  # not durable, so not acknowledged: the upstream retries
            async with http.get(f"{sf.url}/readyz") as resp:
                assert resp.status == 503
    finally:
        await outage(database, on=False)

    summary = await wait_done(sf, batch_id, 90)
    assert summary["counts"]["succeeded"] == 60, summary["counts"]
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok, report.violations[:10]
    metrics = sf.services.metrics.render().decode()
    assert 'segflow_webhooks_total{outcome="unavailable"}' in metrics
