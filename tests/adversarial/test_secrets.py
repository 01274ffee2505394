"""No secret in anything segflow writes: a real run (the sandbox and `segflow serve` as processes,
JSON logs at debug level with the access log, faults on, signed callbacks to a receiver, a key
rotation in place, tracing exported over OTLP with every request header captured), then every byte
segflow logged, stored and exported is searched for every secret it was given or derived.

Searched: segflow's log output (access log included), the SQLite files, the artifact folder, the
events and their deliveries as the API shows them, the callback bodies receivers got, and every
span as an OTLP collector received it (no webhook path with its job either). Secrets: the API keys
(configured and created with `segflow keys create`), both webhook master keys, the upstream API
key, every per-job webhook secret (under each master key, each attempt), and the callback signing
material (the whsec_ secrets and the Ed25519 private keys). Stored key hashes are fine; raw keys
are not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.serving import bind_socket, serve_in_loop
from service.signing import CallbackSigner
from service.webhook_secrets import WebhookSecrets
from tests.fixtures.processes import SEGFLOW, Processes, free_port, wait_batch

pytestmark = pytest.mark.slow

API_KEY = "acme-secret-api-key-5f1d0c7e9a3b"
WEBHOOK_KEYS = ("new-webhook-master-key-7c2e91f04ab3", "old-webhook-master-key-19d8e6b7c05f")
UPSTREAM_KEY = "upstream-secret-key-3e8a71c2d9f4"
SAMPLES = ("street.jpg", "portrait.jpg", "shapes.png")
LINK_SIGNATURE = "signed-link-signature-8d2f61c0b7e4"  # as a signed mask link carries it in its query


def encodings(raw: bytes) -> list[bytes]:
    """The forms a derived secret could be written in."""
    return [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")]


async def test_nothing_logged_or_stored_contains_a_secret(processes: Processes, tmp_path: Path) -> None:
    sandbox_port, port = free_port(), free_port()
    sandbox_url, url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{port}"
    db = tmp_path / "segflow.db"
    artifacts = tmp_path / "artifacts"
    env = {
        "SEGFLOW_PORT": str(port),
        "SEGFLOW_PUBLIC_URL": url,
        "SEGFLOW_DATABASE_URL": f"sqlite:///{db}",
        "SEGFLOW_ARTIFACT_DIR": str(artifacts),
        "SEGFLOW_UPSTREAM_URL": sandbox_url,
        "SEGFLOW_UPSTREAM_API_KEY": UPSTREAM_KEY,
        "SEGFLOW_UPSTREAM_IS_SANDBOX": "true",
        "SEGFLOW_ALLOW_PRIVATE_IMAGE_URLS": "true",
        "SEGFLOW_WEBHOOK_KEYS": ",".join(WEBHOOK_KEYS),
        "SEGFLOW_API_KEYS": f"acme:{API_KEY}",
        "SEGFLOW_POLL_AFTER_S": "1",
        "SEGFLOW_RECONCILE_INTERVAL_S": "0.2",
        "SEGFLOW_ADOPTION_WINDOW_S": "2",
        "SEGFLOW_CALLBACK_INTERVAL_S": "0.1",
        "SEGFLOW_LOG_FORMAT": "json",
        "SEGFLOW_LOG_LEVEL": "debug",
    }
    # A key created the way operators do; printed once, stored hashed.
    created = subprocess.run(  # noqa: ASYNC221 - before anything runs in this loop
        [*SEGFLOW, "keys", "create", "--tenant", "beta"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    beta_key = created.stdout.strip().splitlines()[-1]
    assert len(beta_key) >= 16

    received: list[bytes] = []
    exported: list[bytes] = []

    async def hook(request: Request) -> Response:
        received.append(await request.body())
        return Response(status_code=200)

    async def collector(request: Request) -> Response:  # an OTLP/HTTP collector's traces endpoint
        exported.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    otlp_sock = bind_socket()
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_sock.getsockname()[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # An operator who captures every header: the scrubber must still keep the secret ones out.
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": "",
    }

    processes.start(
        "sandbox",
        [
            "sandbox",
            "--port",
            str(sandbox_port),
            "--api-key",
            UPSTREAM_KEY,
            "--latency-min",
            "0",
            "--latency-max",
            "0.2",
            "--webhook-drop",
            "0.2",
            "--webhook-duplicate",
            "0.2",
            "--create-lost",
            "0.2",
        ],
        {},
        f"{sandbox_url}/samples",
    )
    async with (
        serve_in_loop(Starlette(routes=[Route("/v1/traces", collector, methods=["POST"])]), sock=otlp_sock),
        serve_in_loop(Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])) as receiver,
        aiohttp.ClientSession() as http,
    ):
        server = processes.start("segflow", ["serve"], env, f"{url}/healthz")

        async def call(method: str, path: str, key: str = API_KEY, **kw: Any) -> Any:
            async with http.request(method, url + path, headers={"authorization": f"Bearer {key}"}, **kw) as r:
                return r.status, await r.read()

        status, raw = await call("POST", "/v1/subscriptions", json={"url": f"{receiver}/sub", "ed25519": True})
        assert status == 201, raw
        sub = orjson.loads(raw)
        batches = []
        for key in (API_KEY, beta_key):
            items = [{"image": f"{sandbox_url}/samples/{SAMPLES[i % 3]}", "prompt": f"thing {i}"} for i in range(8)]
            status, raw = await call(
                "POST", "/v1/batches", key, json={"items": items, "callback_url": f"{receiver}/batch"}
            )
            assert status == 202, raw
            batches.append((key, orjson.loads(raw)))
        # Some refusals, logged too: a wrong key, a wrong webhook secret, a malformed webhook.
        assert (await call("GET", "/v1/batches/x", "wrong-key-0123456789abcdef"))[0] == 401
        job_id = batches[0][1]["jobs"][0]["job_id"]
        for secret, body in (
            ("not-the-secret", b"{}"),
            (WebhookSecrets([WEBHOOK_KEYS[0].encode()]).derive(job_id, 1), b"{"),
        ):
            async with http.post(
                f"{url}/webhooks/qubico/{job_id}", data=body, headers={"x-webhook-secret": secret}
            ) as r:
                assert r.status in (400, 401)
        for key, batch in batches:
            done = await wait_batch(
                http, f"{url}/v1/batches/{batch['batch_id']}", key, lambda b: b["done"] == b["total"], 90
            )
            assert done["counts"].get("succeeded", 0) >= 1, done
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while sum(b'"batch.completed"' in r for r in received) < 3:  # 2 batch callbacks + the subscription
            assert loop.time() < deadline, len(received)
            await asyncio.sleep(0.1)
        status, raw = await call("GET", f"/v1/jobs/{job_id}/mask")
        # A link signed in its query string (the artifacts' signed mask links): never logged or traced.
        status, raw = await call("GET", f"/v1/jobs/{job_id}/mask?expires=4102444800&sig={LINK_SIGNATURE}")
        # What the API shows of events and deliveries, for both tenants; and the callback keys.
        shown: list[bytes] = []
        owners: set[str] = set()
        client_secrets: list[str] = list(sub["secrets"])
        for key, _batch in batches:
            status, raw = await call("GET", "/v1/callback-keys", key)
            assert status == 200, raw
            client_secrets += orjson.loads(raw)["secrets"]
            status, raw = await call("GET", "/v1/events?limit=500", key)
            assert status == 200, raw
            shown.append(raw)
            for event in orjson.loads(raw)["events"]:
                status, raw = await call("GET", f"/v1/events/{event['id']}/deliveries", key)
                shown.append(raw)
        server.send_signal(signal.SIGTERM)  # a clean stop folds SQLite's WAL into the file, flushes spans
        assert server.wait(timeout=30) == 0

    # Every secret in every form. ----------------------------------------------------------------
    with sqlite3.connect(db) as conn:
        job_ids = [r[0] for r in conn.execute("SELECT id FROM jobs")]
        attempts = max(r[0] for r in conn.execute("SELECT attempt FROM jobs"))
        owners |= {r[0] for r in conn.execute("SELECT DISTINCT signer FROM deliveries")}
        stored_hashes = [r[0] for r in conn.execute("SELECT * FROM api_keys")]
    assert len(job_ids) == 16 and owners
    secrets: dict[str, bytes] = {
        "api key": API_KEY.encode(),
        "signed link signature": LINK_SIGNATURE.encode(),
        "created api key": beta_key.encode(),
        "upstream api key": UPSTREAM_KEY.encode(),
        **{f"webhook master key {i}": k.encode() for i, k in enumerate(WEBHOOK_KEYS)},
    }
    for i, master in enumerate(WEBHOOK_KEYS):
        derive = WebhookSecrets([master.encode()])
        for job in job_ids:
            for attempt in range(1, attempts + 2):
                secrets[f"webhook secret {job}:{attempt} under key {i}"] = derive.derive(job, attempt).encode()
    signer = CallbackSigner([k.encode() for k in WEBHOOK_KEYS])
    for owner in owners:
        for j, secret in enumerate(signer.secrets(owner)):
            secrets[f"whsec {owner} {j}"] = secret.encode()
        for i, master in enumerate(WEBHOOK_KEYS):
            for purpose in ("hmac", "ed25519"):
                material = signer._material(master.encode(), purpose, owner)
                for n, form in enumerate(encodings(material)):
                    secrets[f"{purpose} material {owner} key {i} form {n}"] = form
    for n, s in enumerate(client_secrets):
        secrets[f"callback secret handed out #{n}"] = s.encode()
    assert len(client_secrets) == 3 * len(WEBHOOK_KEYS)  # one per key: the subscription's and each tenant's

    corpus: dict[str, bytes] = {
        "segflow log": (tmp_path / "segflow.log").read_bytes(),
        "database": b"".join(p.read_bytes() for p in tmp_path.glob("segflow.db*")),
        "artifacts": b"".join(p.read_bytes() for p in sorted(artifacts.rglob("*")) if p.is_file()),
        "events and deliveries (API)": b"\n".join(shown),
        "callback bodies": b"\n".join(received),
        "spans (OTLP)": b"\n".join(exported),
    }
    # The search works: what should be there is there.
    assert job_ids[0].encode() in corpus["segflow log"] and job_ids[0].encode() in corpus["database"]
    assert b"webhook_applied" in corpus["segflow log"] and b'"level"' in corpus["segflow log"]
    assert corpus["artifacts"].count(b"\x89PNG") >= 1
    assert stored_hashes  # keys are stored (hashed)
    access = [e for e in _json_lines(corpus["segflow log"]) if e.get("event") == "http_request"]
    assert {"/v1/batches", "/webhooks/qubico/{job_id}", "/v1/jobs/{job_id}/mask"} <= {e["route"] for e in access}
    assert {e["tenant"] for e in access if e["route"] == "/v1/batches"} == {"acme", "beta"}
    span_names = {s.name for body in exported for s in _spans(body)}
    assert {"segflow.job", "segflow.submit", "segflow.webhook", "segflow.fetch", "segflow.callback"} <= span_names
    # Headers were captured and exported, their secret values redacted.
    assert b"http.request.header.x_webhook_secret" in corpus["spans (OTLP)"]
    assert b"http.request.header.authorization" in corpus["spans (OTLP)"]
    webhook_paths = [f"/webhooks/qubico/{job}".encode() for job in job_ids]
    assert not [p for p in webhook_paths if p in corpus["spans (OTLP)"] or p in corpus["segflow log"]]
    leaks = [(what, where) for what, secret in secrets.items() for where, data in corpus.items() if secret in data]
    assert not leaks, leaks[:20]
    assert len(corpus["segflow log"]) > 10_000  # a real run's worth of logging was searched


def _json_lines(log: bytes) -> list[dict[str, Any]]:
    out = []
    for line in log.splitlines():
        if line.startswith(b"{"):
            out.append(orjson.loads(line))
    return out


def _spans(body: bytes) -> list[Any]:
    request = ExportTraceServiceRequest.FromString(body)
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
