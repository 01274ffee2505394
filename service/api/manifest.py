"""GET /v1/batches/{batch_id}/manifest: one line per job for pipelines, as JSON Lines (default)
or CSV (`Accept: text/csv`), streamed page by page so a large batch never sits in memory.

Each succeeded job's line carries a signed download link (no API key needed, expires after
SEGFLOW_ARTIFACT_LINK_TTL_S), so a pipeline can hand the manifest to workers that hold no key.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from service.api.batches import owned_batch
from service.api.endpoint import Call
from service.context import Services
from service.jobs import JobRow
from service.states import State

PAGE = 500
COLUMNS = (
    "job_id",
    "input",
    "prompt",
    "state",
    "error_code",
    "mask_sha256",
    "mask_bytes",
    "width",
    "height",
    "download_url",
    "price_usd",
)


async def batch_manifest(call: Call) -> Response:
    batch = await owned_batch(call)
    as_csv = "text/csv" in call.request.headers.get("accept", "")
    lines = _lines(call.services, batch.id)
    first = await anext(lines, None)  # store errors surface as a proper answer, before streaming

    async def body() -> AsyncIterator[bytes]:
        if as_csv:
            yield _csv_row(COLUMNS)
        row = first
        while row is not None:
            yield _csv_row([row[c] for c in COLUMNS]) if as_csv else orjson.dumps(row) + b"\n"
            row = await anext(lines, None)

    media = "text/csv; charset=utf-8" if as_csv else "application/x-ndjson"
    name = f"manifest-{batch.id}.{'csv' if as_csv else 'jsonl'}"
    return StreamingResponse(
        body(), media_type=media, headers={"content-disposition": f'attachment; filename="{name}"', "vary": "accept"}
    )


async def _lines(services: Services, batch_id: str) -> AsyncIterator[dict[str, Any]]:
    after = -1
    while True:
        page = await services.store.list_batch_jobs(batch_id, state=None, after_seq=after, limit=PAGE)
        rows = await asyncio.gather(*(_line(services, job) for job in page))
        for row in rows:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1].seq


async def _line(services: Services, job: JobRow) -> dict[str, Any]:
    row: dict[str, Any] = {
        "job_id": job.id,
        "input": job.image,
        "prompt": job.prompt,
        "state": job.state.value,
        "error_code": job.error_code,
        "mask_sha256": None,
        "mask_bytes": None,
        "width": None,
        "height": None,
        "download_url": None,
        "price_usd": job.price_usd,
    }
    if job.state is not State.SUCCEEDED:
        return row
    artifacts = await services.store.job_artifacts(job.id)
    if not artifacts:
        return row
    mask = artifacts[0]
    pruned = await services.store.pruned_masks(job.id)
    row |= {
        "mask_sha256": mask.sha256,
        "mask_bytes": mask.bytes,
        "width": mask.width,
        "height": mask.height,
        "download_url": None if mask.idx in pruned else services.links.mask_url(job.id, mask.idx),
    }
    return row


def _csv_row(values: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(["" if v is None else v for v in values])
    return out.getvalue().encode()
