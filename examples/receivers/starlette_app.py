"""A Starlette receiver of segflow callbacks: verifies, drops duplicates by `webhook-id`, fetches
each succeeded job's mask with the async segflow client.

    uvicorn --factory 'starlette_app:from_environment'   (same variables as serverless.py)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from dedupe import Seen
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.client import AsyncClient, InvalidSignature, SegflowError, verify_callback


def create_app(secrets: list[str], api_url: str, api_key: str, mask_dir: Path, seen_db: str) -> Starlette:
    seen = Seen(seen_db)
    segflow = AsyncClient(api_url, api_key)
    mask_dir.mkdir(parents=True, exist_ok=True)

    async def receive(request: Request) -> PlainTextResponse:
        body = await request.body()
        try:
            payload = verify_callback(request.headers, body, secrets)
        except InvalidSignature:
            return PlainTextResponse("bad signature", status_code=401)
        if not seen.claim(payload["id"]):
            return PlainTextResponse("duplicate")
        try:
            if payload["type"] == "job.succeeded":
                job_id = payload["data"]["job_id"]
                mask = await segflow.get_job_mask(job_id)
                await asyncio.to_thread((mask_dir / f"{job_id}.png").write_bytes, mask)
        except (SegflowError, OSError):
            seen.release(payload["id"])  # segflow retries; the retry is handled
            return PlainTextResponse("failed", status_code=500)
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await segflow.close()

    return Starlette(routes=[Route("/segflow", receive, methods=["POST"])], lifespan=lifespan)


def from_environment() -> Starlette:
    return create_app(
        os.environ["SEGFLOW_CALLBACK_SECRET"].split(","),
        os.environ["SEGFLOW_API_URL"],
        os.environ["SEGFLOW_API_KEY"],
        Path(os.environ["MASK_DIR"]),
        os.environ["SEEN_DB"],
    )
