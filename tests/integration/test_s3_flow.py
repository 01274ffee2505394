"""segflow end to end with its artifacts in S3 (a real S3-protocol server on loopback), on both
databases: every mask lands in the bucket and nowhere on disk, and reaches clients through signed
links in the job, in `job.succeeded` callbacks and in the batch manifest, with no API key."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.api.manifest import COLUMNS
from service.invariants import check_run
from tests.fixtures.s3 import S3Bucket
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import TENANT_KEYS
from tests.integration.test_callbacks import FAST, Receiver, receiver  # noqa: F401 - the fixture
from tests.integration.test_flow import sandbox_tasks, submit, wait_done


async def download(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as resp:  # no authorization header
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def test_batch_with_masks_in_s3(
    sandbox: Any,
    segflow: Any,
    s3: S3Bucket,
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811 - test_callbacks' fixture, imported above
) -> None:
    hooks = receiver
    sb = await sandbox()
    sf = await segflow(sb.url, **s3.settings, **FAST)
    items = [{"image": sb.sample_url(), "prompt": f"thing {i}"} for i in range(12)]
    answer = await sf.client.create_batch(items, callback_url=f"{hooks.url}/hook")
    batch_id, job_ids = answer["batch_id"], [j["job_id"] for j in answer["jobs"]]
    summary = await wait_done(sf, batch_id, 60)
    assert summary["counts"]["succeeded"] == 12
    # Every mask is in the bucket with its recorded sha256 (check_run reads them back from S3) …
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok and report.masks_checked == 12, report.violations[:5]
    # … and none on local disk.
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*.png"))
    await hooks.wait(lambda: len(hooks.ok("/hook")) == 13)
    succeeded = [r.json["data"] for r in hooks.ok("/hook") if r.json["type"] == "job.succeeded"]
    auth = {"authorization": f"Bearer {TENANT_KEYS['acme']}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sf.url}/v1/batches/{batch_id}/manifest", headers=auth) as resp:
            assert resp.status == 200 and resp.headers["content-type"] == "application/x-ndjson"
            manifest = [orjson.loads(line) for line in (await resp.read()).splitlines()]
        for data in succeeded:
            mask = await download(http, data["artifact"]["download_url"])
            assert hashlib.sha256(mask).hexdigest() == data["artifact"]["sha256"]
        assert [row["job_id"] for row in manifest] == job_ids
        for row in manifest:
            assert row["state"] == "succeeded" and row["input"] == sb.sample_url()
            assert hashlib.sha256(await download(http, row["download_url"])).hexdigest() == row["mask_sha256"]
        async with http.get(
            f"{sf.url}/v1/batches/{batch_id}/manifest",
            headers={"authorization": f"Bearer {TENANT_KEYS['acme']}", "accept": "text/csv"},
        ) as resp:
            assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
            table = list(csv.reader(io.StringIO(await resp.text())))
    assert tuple(table[0]) == COLUMNS and len(table) == 13
    by_id = {r[0]: dict(zip(COLUMNS, r, strict=True)) for r in table[1:]}
    first = manifest[0]
    assert by_id[first["job_id"]]["mask_sha256"] == first["mask_sha256"]
    assert orjson.loads(by_id[first["job_id"]]["price_usd"]) == first["price_usd"]


async def test_masks_wait_out_a_storage_outage_and_are_stored_once_it_ends(
    sandbox: Any, segflow: Any, s3: S3Bucket
) -> None:
    missing = S3Bucket(s3.endpoint, f"{s3.bucket}-later")  # no such bucket yet: every write fails
    sb = await sandbox()
    sf = await segflow(sb.url, **missing.settings)
    batch_id, job_ids = await submit(sf, sb, 3)

    async def waiting_on_storage() -> bool:
        jobs = [await sf.store.get_job(j) for j in job_ids]
        return all(j.state.value == "fetching" and "storing the mask" in (j.error_message or "") for j in jobs)

    await wait_until(waiting_on_storage, timeout_s=30)
    async with aiohttp.ClientSession() as http, http.put(f"{s3.endpoint}/{missing.bucket}") as resp:
        assert resp.status == 200  # the storage is back
    summary = await wait_done(sf, batch_id, 60)
    assert summary["counts"]["succeeded"] == 3
    report = await check_run(sf.store, sf.services.artifacts, job_ids, await sandbox_tasks(sb))
    assert report.ok and report.masks_checked == 3, report.violations[:5]
