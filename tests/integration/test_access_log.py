"""The access log: one structured `http_request` event per request through a real segflow, with
method, route template, status, duration, tenant and request id, and nothing of the path or the
query (a webhook's job and secret, a signed link's signature, a key) in it."""

from __future__ import annotations

import aiohttp
import orjson
from structlog.testing import capture_logs

from tests.fixtures.sandbox import StartSandbox
from tests.fixtures.segflow import TENANT_KEYS, Starter

SIGNATURE = "sig-1f0e9d8c7b6a5f4e3d2c"
FIELDS = {"event", "log_level", "method", "route", "status", "duration_ms", "tenant", "request_id"}


async def test_every_request_is_logged_by_route_template(segflow: Starter, sandbox: StartSandbox) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=())
    key = TENANT_KEYS["acme"]
    auth = {"authorization": f"Bearer {key}"}
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http:
            body = {"items": [{"image": sb.sample_url(), "prompt": "car"}]}
            async with http.post(f"{sf.url}/v1/batches", json=body, headers={**auth, "x-request-id": "req-42"}) as r:
                assert r.status == 202
                job_id = (await r.json())["jobs"][0]["job_id"]
            async with http.get(f"{sf.url}/v1/jobs/{job_id}/mask?expires=1&sig={SIGNATURE}", headers=auth) as r:
                mask_status, mask_request_id = r.status, r.headers["x-request-id"]
            async with http.post(
                f"{sf.url}/webhooks/qubico/{job_id}", data=b"{}", headers={"x-webhook-secret": SIGNATURE}
            ) as r:
                assert r.status == 401
            async with http.get(f"{sf.url}/no/such/{SIGNATURE}?token={SIGNATURE}") as r:
                assert r.status == 404
    events = [e for e in logs if e["event"] == "http_request"]
    assert [(e["method"], e["route"], e["status"]) for e in events] == [
        ("POST", "/v1/batches", 202),
        ("GET", "/v1/jobs/{job_id}/mask", mask_status),
        ("POST", "/webhooks/qubico/{job_id}", 401),
        ("GET", "unmatched", 404),
    ]
    assert all(set(e) == FIELDS for e in events)
    assert [e["tenant"] for e in events] == ["acme", "acme", None, None]
    assert events[0]["request_id"] == "req-42" and events[1]["request_id"] == mask_request_id
    assert all(e["request_id"] and e["duration_ms"] >= 0 for e in events)
    written = orjson.dumps(events)
    for secret in (SIGNATURE, key, job_id):
        assert secret.encode() not in written


async def test_the_access_log_can_be_turned_off_and_metrics_still_count(
    segflow: Starter, sandbox: StartSandbox
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=(), access_log=False)
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as http, http.get(f"{sf.url}/healthz") as r:
            assert r.status == 200
    assert not [e for e in logs if e["event"] == "http_request"]
    counted = sf.services.metrics.registry.get_sample_value(
        "segflow_http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}
    )
    assert counted == 1
