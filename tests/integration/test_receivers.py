"""The example receivers (examples/receivers) fed by segflow's own deliverer: a real segflow with
the sandbox upstream, the receivers on 127.0.0.1. Each verifies, keeps every succeeded job's mask
exactly once through duplicates (a replay of everything), and refuses a forged callback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.serving import serve_in_loop
from tests.fixtures.api import api_on
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import TENANT_KEYS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "receivers"
QUICK = {"callback_retry_schedule_s": (0.2,) * 5, "callback_interval_s": 0.05}
# The receivers are what is tested here, not the store: one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def example(name: str) -> Any:
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def lambda_url(handler: Any) -> Starlette:
    """What a Lambda function URL does in front of `handler`: the request as an event, and back."""

    async def invoke(request: Request) -> Response:
        event = {
            "headers": dict(request.headers),
            "body": base64.b64encode(await request.body()).decode(),
            "isBase64Encoded": True,
            "requestContext": {"http": {"method": request.method, "path": request.url.path}},
        }
        answer = await asyncio.to_thread(handler, event, None)
        return Response(answer.get("body", ""), status_code=answer["statusCode"])

    return Starlette(routes=[Route("/segflow", invoke, methods=["POST"])])


@pytest.mark.parametrize("kind", ["serverless", "starlette"])
async def test_receiver_keeps_each_mask_once_and_refuses_forgeries(
    kind: str, sandbox: Any, segflow: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, **QUICK)
    masks, seen_db = tmp_path / "masks", str(tmp_path / "seen.db")
    async with api_on(sf) as api:
        # The subscription first (its secret configures the receiver), then the receiver's URL.
        sub = (await api.call("POST", "/v1/subscriptions", json={"url": "http://127.0.0.1:9/placeholder"})).body
        env = {
            "SEGFLOW_CALLBACK_SECRET": ",".join(sub["secrets"]),
            "SEGFLOW_API_URL": sf.url,
            "SEGFLOW_API_KEY": TENANT_KEYS["acme"],
            "MASK_DIR": str(masks),
            "SEEN_DB": seen_db,
        }
        for name, value in env.items():
            monkeypatch.setitem(os.environ, name, value)
        if kind == "serverless":
            app = lambda_url(example("serverless").handler)
        else:
            app = example("starlette_app").from_environment()
        async with serve_in_loop(app) as receiver_url:
            url = f"{receiver_url}/segflow"
            assert (await api.call("PATCH", f"/v1/subscriptions/{sub['id']}", json={"url": url})).status == 200
            items = [{"image": sb.sample_url(), "prompt": f"p{i}"} for i in range(3)]
            batch = await sf.client.create_batch(items)
            job_ids = {j["job_id"] for j in batch["jobs"]}

            async def all_delivered() -> bool:
                events = (await api.call("GET", "/v1/events")).body["events"]
                found = [(await api.call("GET", f"/v1/events/{e['id']}/deliveries")).body for e in events]
                states = [d["state"] for f in found for d in f["deliveries"]]
                return len(events) == 4 and states == ["delivered"] * 4

            await wait_until(all_delivered, 30, "every event delivered to the receiver")
            assert {p.stem for p in masks.glob("*.png")} == job_ids
            for job_id in job_ids:
                stored = await sf.client.get_job_mask(job_id)
                assert (
                    hashlib.sha256((masks / f"{job_id}.png").read_bytes()).digest() == hashlib.sha256(stored).digest()
                )
            # Every event delivered again: the receiver answers 2xx and does nothing twice.
            stamps = {p: p.stat().st_mtime_ns for p in masks.glob("*.png")}
            events = (await api.call("GET", "/v1/events")).body["events"]
            for e in events:
                await api.call("POST", f"/v1/events/{e['id']}/replay", json={"all": True})
            await wait_until(all_delivered, 30, "the replays delivered")
            assert {p: p.stat().st_mtime_ns for p in masks.glob("*.png")} == stamps
            # A forged callback is refused.
            async with aiohttp.ClientSession() as http:
                forged = {"webhook-id": "evt_x", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}
                async with http.post(url, data=b'{"id":"evt_x"}', headers=forged) as resp:
                    assert resp.status == 401
