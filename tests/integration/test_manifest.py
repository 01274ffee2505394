"""GET /v1/batches/{id}/manifest: one line per job in submission order, JSON Lines or CSV."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import AsyncIterator

import orjson
import pytest

from service.api.manifest import COLUMNS
from tests.fixtures.api import IMAGE, Api, failed, png, running_api, succeeded
from tests.fixtures.segflow import Starter


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


async def three_jobs(api: Api) -> tuple[str, list[str]]:
    created = await api.submit(n=3)
    ids = [j["job_id"] for j in created["jobs"]]
    await succeeded(api.services, ids[0], png(6, 4))
    await failed(api.services, ids[1])
    return created["batch_id"], ids


async def test_json_lines_name_every_job_with_its_outcome(api: Api) -> None:
    batch_id, ids = await three_jobs(api)
    answer = await api.call("GET", f"/v1/batches/{batch_id}/manifest")
    assert answer.status == 200 and answer.headers["content-type"] == "application/x-ndjson"
    rows = [orjson.loads(line) for line in answer.raw.splitlines()]
    assert [r["job_id"] for r in rows] == ids and all(tuple(r) == COLUMNS for r in rows)
    done, bad, waiting = rows
    assert done | {"download_url": None} == {
        "job_id": ids[0],
        "input": IMAGE,
        "prompt": "thing 0",
        "state": "succeeded",
        "error_code": None,
        "mask_sha256": hashlib.sha256(png(6, 4)).hexdigest(),
        "mask_bytes": len(png(6, 4)),
        "width": 2,
        "height": 1,
        "download_url": None,
        "price_usd": 0.001,
    }
    assert done["download_url"].startswith(f"{api.app.url}/links/masks/{ids[0]}/0.png?")
    assert (bad["state"], bad["error_code"], bad["download_url"]) == ("failed", "rejected", None)
    assert (waiting["state"], waiting["mask_sha256"]) == ("queued", None)


async def test_csv_when_asked_for(api: Api) -> None:
    batch_id, ids = await three_jobs(api)
    answer = await api.call("GET", f"/v1/batches/{batch_id}/manifest", headers={"accept": "text/csv"})
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(answer.raw.decode())))
    assert [r["job_id"] for r in table] == ids and tuple(table[0]) == COLUMNS
    assert (table[1]["state"], table[1]["error_code"], table[1]["download_url"]) == ("failed", "rejected", "")


async def test_a_manifest_pages_through_a_large_batch(api: Api) -> None:
    created = await api.submit(n=501)  # more than one page of the store
    answer = await api.call("GET", f"/v1/batches/{created['batch_id']}/manifest")
    assert len(answer.raw.splitlines()) == 501


async def test_another_tenants_batch_is_not_found(api: Api) -> None:
    batch_id, _ = await three_jobs(api)
    answer = await api.call("GET", f"/v1/batches/{batch_id}/manifest", tenant="globex")
    assert (answer.status, answer.error) == (404, "not_found")
