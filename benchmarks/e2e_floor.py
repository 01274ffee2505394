"""The floor of the end-to-end benchmark: the least a durable segmentation flow can do per job.

It does the three HTTP exchanges every job needs with the same libraries segflow uses (aiohttp's
client for the create and the mask download, uvicorn with uvloop + httptools and Starlette for the
batch and the webhook), and the durable writes segflow's promises need, each group-committed by
one writer at segflow's durability (`benchmarks/floor.py`: `synchronous=FULL`):

    accept the batch (one row a job)  ->  202
    mark the job sent (never pay twice) -> POST /api/v1/task -> record its task id
    webhook: constant-time secret check, JSON parse, record the mask URL  ->  200
    GET the mask  ->  write it durably (temporary file, fsync, rename, fsync of the folder)  ->  record it

No typed decoding, no state machine, no task or event rows, no leases, caps, retries, checks of the
image, hashes, metrics or logs. Every flow that keeps segflow's guarantees does strictly more, so
its CPU per job is the least any of them can spend on this machine. One process, like `segflow
serve`; run by `benchmarks/flows.py end_to_end_floor`, or by hand:

    python -m benchmarks.e2e_floor --port 8700 --db /tmp/f.db --art /tmp/art --upstream http://127.0.0.1:8601
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.floor import GroupCommit
from service.serving import run as run_server
from service.webhook_secrets import WebhookSecrets

KEY = "bench-e2e-floor-master-key-0123456789"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, image TEXT NOT NULL, "
    "prompt TEXT NOT NULL, task_id TEXT, mask TEXT, updated_at REAL NOT NULL)"
)
ACCEPT = "INSERT INTO jobs (id, state, image, prompt, updated_at) VALUES ({0}, 'queued', {1}, {2}, {3})"
SENT = "UPDATE jobs SET state = 'sent', updated_at = {0} WHERE id = {1} AND state = 'queued'"
CREATED = "UPDATE jobs SET state = 'submitted', task_id = {0}, updated_at = {1} WHERE id = {2} AND state = 'sent'"
COMPLETED = "UPDATE jobs SET state = 'fetching', mask = {0}, updated_at = {1} WHERE id = {2} AND state != 'succeeded'"
STORED = "UPDATE jobs SET state = 'succeeded', mask = {0}, updated_at = {1} WHERE id = {2} AND state = 'fetching'"
SUBMITTERS, FETCHERS = 64, 32  # segflow's e2e run: SEGFLOW_SUBMIT_CONCURRENCY, SEGFLOW_FETCH_CONCURRENCY


def floor_app(db: Path, art: Path, upstream: str, public_url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    secrets = WebhookSecrets([KEY.encode()])
    writes = GroupCommit(f"sqlite:///{db}")
    to_submit: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
    to_fetch: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    workers: list[asyncio.Task[None]] = []

    async def batches(request: Request) -> Response:
        items = orjson.loads(await request.body())["items"]
        jobs = [(str(uuid.uuid4()), item["image"], item["prompt"]) for item in items]
        now = time.time()
        await asyncio.gather(*(writes.write(ACCEPT, job_id, image, prompt, now) for job_id, image, prompt in jobs))
        for job in jobs:
            to_submit.put_nowait(job)
        return Response(orjson.dumps({"jobs": [{"job_id": j} for j, _, _ in jobs]}), 202, media_type="application/json")

    async def hook(request: Request) -> Response:
        body = await request.body()
        job_id = request.path_params["job_id"]
        presented = request.headers.get("x-webhook-secret", "").encode()
        if not hmac.compare_digest(presented, secrets.derive(job_id, 1).encode()):
            return Response(status_code=401)
        data = orjson.loads(body)["data"]
        if data["status"] == "completed":
            url = data["output"]["image_urls"][0]
            await writes.write(COMPLETED, url, time.time(), job_id)
            to_fetch.put_nowait((job_id, url))
        return Response(b'{"status":"applied"}', media_type="application/json")

    async def submitter(http: aiohttp.ClientSession) -> None:
        headers = {"x-api-key": "sandbox-key", "content-type": "application/json"}
        while True:
            job_id, image, prompt = await to_submit.get()
            await writes.write(SENT, time.time(), job_id)
            body = {
                "model": "Qubico/image-toolkit",
                "task_type": "segment",
                "input": {"image": image, "prompt": prompt, "negative_prompt": "", "segment_factor": 0},
                "config": {
                    "service_mode": "",
                    "webhook_config": {
                        "endpoint": f"{public_url}/webhooks/qubico/{job_id}",
                        "secret": secrets.derive(job_id, 1),
                    },
                },
            }
            async with http.post(f"{upstream}/api/v1/task", data=orjson.dumps(body), headers=headers) as resp:
                task_id = orjson.loads(await resp.read())["data"]["task_id"]
            await writes.write(CREATED, task_id, time.time(), job_id)

    async def fetcher(http: aiohttp.ClientSession) -> None:
        while True:
            job_id, url = await to_fetch.get()
            async with http.get(url) as resp:
                png = await resp.read()
            path = art / f"{job_id}.png"
            await asyncio.to_thread(_write_durably, path, png)
            await writes.write(STORED, str(path), time.time(), job_id)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        await asyncio.to_thread(_create, db, art)
        await writes.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SUBMITTERS + FETCHERS)) as http:
            workers.extend(asyncio.create_task(submitter(http)) for _ in range(SUBMITTERS))
            workers.extend(asyncio.create_task(fetcher(http)) for _ in range(FETCHERS))
            try:
                yield
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                await writes.stop()

    routes = [
        Route("/v1/batches", batches, methods=["POST"]),
        Route("/webhooks/qubico/{job_id}", hook, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _create(db: Path, art: Path) -> None:
    art.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(SCHEMA)


def _write_durably(path: Path, data: bytes) -> None:
    """The durable write `LocalArtifactStore` makes (temporary file, fsync, rename, folder fsync),
    written apart on purpose, like `GroupCommit`: a baseline must not run the code it measures."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


async def serve(port: int, db: Path, art: Path, upstream: str) -> None:
    import uvicorn

    app = floor_app(db, art, upstream, f"http://127.0.0.1:{port}")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--art", type=Path, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    run_server(serve(args.port, args.db, args.art, args.upstream))
