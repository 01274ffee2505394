"""Three `segflow serve` replicas on one PostgreSQL database, webhooks spread over all three, one
replica SIGKILLed mid-batch and another restarted: every job ends exactly once, nothing is paid
twice except after a passed adoption window, no artifact or event is duplicated. The masks live in
S3 (a real S3-protocol server on loopback) and each replica has its own empty local folder, so a
mask stored by one replica is served by another through the bucket."""

from __future__ import annotations

import hashlib
import json
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from service.artifacts import open_backend
from service.invariants import check_run
from service.store import open_store_for
from tests.fixtures.database import drop_postgres_database, fresh_postgres_database, postgres_dsn
from tests.fixtures.processes import Processes, free_port, wait_batch
from tests.fixtures.s3 import S3Bucket

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

API_KEY = "replica-tenant-key-0123456789abcdef"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    if postgres_dsn() is None:
        pytest.skip("needs SEGFLOW_TEST_POSTGRES_DSN (CI sets it)")
    url, name = await fresh_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(name)


def replica_env(n: int, port: int, pg_url: str, sandbox_url: str, disk: Path, s3: S3Bucket) -> dict[str, str]:
    return {
        **s3.env,
        "SEGFLOW_INSTANCE_ID": f"replica-{n}",
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SEGFLOW_DATABASE_URL": pg_url,
        "SEGFLOW_ARTIFACT_DIR": str(disk / f"replica-{n}"),  # unused: SEGFLOW_ARTIFACT_URL is S3
        "SEGFLOW_UPSTREAM_URL": sandbox_url,
        "SEGFLOW_UPSTREAM_API_KEY": "sandbox-key",
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
        "SEGFLOW_WEBHOOK_KEYS": "replica-webhook-master-key-0123456789",
        "SEGFLOW_API_KEYS": f"acme:{API_KEY}",
        "SEGFLOW_POLL_AFTER_S": "1",
        "SEGFLOW_POLL_BACKOFF_MAX_S": "2",
        "SEGFLOW_ADOPTION_WINDOW_S": "3",
        "SEGFLOW_RECONCILE_INTERVAL_S": "0.3",
        "SEGFLOW_SUBMIT_LEASE_S": "3",
        "SEGFLOW_FETCH_LEASE_S": "5",
        "SEGFLOW_MAX_IN_FLIGHT": "60",
        "SEGFLOW_CREATES_PER_S": "30",
        "SEGFLOW_LOG_LEVEL": "info",  # the fetcher's mask_stored lines say which replica stored what
        "SEGFLOW_LOG_FORMAT": "json",
    }


def stored_by(logdir: Path) -> dict[str, str]:
    """job id -> the replica whose fetcher stored its mask, from the replicas' JSON logs."""
    found: dict[str, str] = {}
    for log in logdir.glob("replica-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if '"mask_stored"' in line:
                entry = json.loads(line)
                found[entry["job_id"]] = entry["instance"]
    return found


async def test_three_replicas_one_killed_one_restarted(
    processes: Processes, tmp_path: Path, pg_url: str, s3: S3Bucket
) -> None:
    sandbox_port = free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    processes.start(
        "sandbox",
        [
            "sandbox",
            "--port",
            str(sandbox_port),
            "--seed",
            "3",
            "--latency-min",
            "0.2",
            "--latency-max",
            "1.5",
            "--webhook-retry-interval",
            "0.5",
            "--webhook-drop",
            "0.1",
            "--webhook-duplicate",
            "0.2",
            "--log-level",
            "warning",
        ],
        {},
        f"{sandbox_url}/samples",
    )
    disk = tmp_path / "disks"
    ports = [free_port() for _ in range(3)]
    envs = [replica_env(n, port, pg_url, sandbox_url, disk, s3) for n, port in enumerate(ports)]
    replicas = [
        processes.start(f"replica-{n}", ["serve"], env, f"http://127.0.0.1:{ports[n]}/healthz")
        for n, env in enumerate(envs)
    ]
    images = [f"{sandbox_url}/samples/{n}" for n in ("street.jpg", "portrait.jpg", "shapes.png")]
    items = [{"image": images[i % 3], "prompt": f"object {i}"} for i in range(150)]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{ports[0]}/v1/batches",
            json={"items": items},
            headers={"authorization": f"Bearer {API_KEY}"},
        ) as resp:
            assert resp.status == 202, await resp.text()
            accepted = await resp.json()
        batch_url = f"http://127.0.0.1:{ports[0]}/v1/batches/{accepted['batch_id']}"
        await wait_batch(http, batch_url, API_KEY, lambda b: b["counts"]["succeeded"] >= 20, 90)
        processes.kill(replicas[1], signal.SIGKILL)  # dies holding leases and owning webhook URLs
        processes.kill(replicas[2], signal.SIGTERM)  # a graceful restart
        processes.start("replica-2-again", ["serve"], envs[2], f"http://127.0.0.1:{ports[2]}/healthz")
        summary = await wait_batch(http, batch_url, API_KEY, lambda b: b["done"] == b["total"], 180)
        async with http.get(f"{sandbox_url}/_sandbox/tasks") as resp:
            tasks = await resp.json()
        # Each mask, served by a live replica other than the one that stored it, through the
        # signed link that replica hands out (no API key).
        # A replica killed (or stopped) between its commit and its log line stored a mask that no
        # log names: its storer is one of the two that went down, so replica 0 serves it.
        storer = stored_by(tmp_path)
        served = defaultdict(int)
        for job in accepted["jobs"]:
            by = storer.get(job["job_id"], "a replica that went down")
            server = next(n for n in (0, 2) if f"replica-{n}" != by)
            base = f"http://127.0.0.1:{ports[server]}"
            async with http.get(f"{base}/v1/jobs/{job['job_id']}", headers={"authorization": f"Bearer {API_KEY}"}) as r:
                artifact = (await r.json())["artifact"]
            assert artifact["download_url"].startswith(base)
            async with http.get(artifact["download_url"]) as r:
                assert r.status == 200
                assert hashlib.sha256(await r.read()).hexdigest() == artifact["sha256"]
            served[(by, server)] += 1
    assert summary["counts"]["succeeded"] == 150, summary["counts"]
    store = open_store_for(pg_url)
    await store.open()
    try:
        job_ids = [j["job_id"] for j in accepted["jobs"]]
        report = await check_run(store, open_backend(s3.artifact_url, "", s3.endpoint), job_ids, tasks)
        for job_id in job_ids:
            stored = [e for e in await store.job_events(job_id) if e.event == "stored"]
            assert len(stored) == 1, job_id
            assert len(await store.job_artifacts(job_id)) == 1
        events = await store.list_events("acme", since=0.0, limit=1000)
    finally:
        await store.close()
    assert report.ok, report.violations[:10]
    assert report.masks_checked == 150
    named = {by for by, _ in served if by in storer.values()}
    assert sum(served.values()) == 150 and len(named) >= 2, served  # stored by several replicas
    assert not disk.exists() or not any(disk.rglob("*.png"))  # and not one mask on a local disk
    assert report.duplicate_paid_tasks <= report.resends_after_adoption_window
    assert sorted(e.type for e in events).count("job.succeeded") == 150
    assert [e.type for e in events].count("batch.completed") == 1
