"""/metrics after a real batch through segflow and the sandbox: names follow the Prometheus
conventions and the values say what happened (jobs, webhooks, spend, callbacks, HTTP per route)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.sandbox import StartSandbox, WebhookRecorder, wait_until
from tests.fixtures.segflow import RunningSegflow, Starter
from tests.integration.test_flow import submit, wait_done

FAST = {"callback_retry_schedule_s": (0.1,), "callback_timeout_s": 1.0, "callback_interval_s": 0.1}


async def scrape(sf: RunningSegflow) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"{sf.url}/metrics") as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def value(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {name for name, _ in samples}


async def test_metrics_after_a_batch(
    segflow: Starter, sandbox: StartSandbox, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, **FAST)
    webhook_recorder.script = [500] * 20  # every callback fails twice and is dead-lettered
    answer = await sf.client.create_batch(
        [{"image": sb.sample_url(), "prompt": f"thing {i}"} for i in range(3)],
        callback_url=webhook_recorder.endpoint("dead"),
    )
    summary = await wait_done(sf, answer["batch_id"], 20)
    assert summary["counts"]["succeeded"] == 3

    async def four_dead() -> bool:
        return value(await scrape(sf), "segflow_callback_deliveries", state="dead") == 4

    await wait_until(four_dead, what="four dead deliveries (three jobs and the batch, two attempts each)")
    assert len(webhook_recorder.received) == 8
    m = await scrape(sf)

    # The default collectors and the build.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names(m)
    assert "python_gc_objects_collected_total" in names(m)
    build = [labels for name, labels in m if name == "segflow_build_info"]
    assert len(build) == 1 and {"version", "python"} == {k for k, _ in build[0]}
    # Store-wide gauges: nothing left in flight, four dead deliveries.
    for state in ("queued", "submitting", "unknown", "submitted", "fetching"):
        assert value(m, "segflow_jobs", state=state) == 0, state
    assert value(m, "segflow_upstream_in_flight") == 0
    assert value(m, "segflow_fetch_backlog") == 0
    assert value(m, "segflow_oldest_live_job_age_seconds") == 0
    assert value(m, "segflow_callback_deliveries", state="dead") == 4
    assert value(m, "segflow_callback_deliveries", state="pending") == 0
    assert value(m, "segflow_store_up") == 1
    # What this process did.
    assert value(m, "segflow_transitions_total", event="succeeded", source="fetcher") == 3
    assert value(m, "segflow_webhooks_total", outcome="applied") >= 3
    assert value(m, "segflow_upstream_calls_total", op="create", result="ok") == 3
    assert value(m, "segflow_callback_attempts_total", outcome="dead") == 4
    assert summary["spend_usd"] > 0
    assert value(m, "segflow_spend_usd_total", tenant="acme") == pytest.approx(summary["spend_usd"])
    # HTTP per route template, never per path.
    assert value(m, "segflow_http_requests_total", method="POST", route="/v1/batches", status="202") == 1
    webhooks = value(
        m, "segflow_http_request_duration_seconds_count", method="POST", route="/webhooks/qubico/{job_id}/{attempt}"
    )
    assert webhooks >= 3
    routes = {dict(labels).get("route") for name, labels in m if name == "segflow_http_requests_total"}
    assert all(r is not None and (r == "unmatched" or r.startswith("/")) for r in routes)
    assert not any(j["job_id"] in str(routes) for j in answer["jobs"])
    # Prometheus conventions: counters end in _total, durations in _seconds, sizes in _bytes.
    for name in names(m):
        if name.startswith("segflow_") and ("seconds" in name or "duration" in name):
            assert "_seconds" in name, name
    assert "segflow_upstream_in_flight" in names(m)  # declared and set


async def test_live_work_shows_in_the_gauges(segflow: Starter, sandbox: StartSandbox) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=())  # nobody submits: the jobs wait
    await submit(sf, sb, 4)
    m = await scrape(sf)
    assert value(m, "segflow_jobs", state="queued") == 4
    assert value(m, "segflow_upstream_in_flight") == 0
    assert value(m, "segflow_oldest_live_job_age_seconds") > 0


async def test_a_scrape_while_the_store_is_down_still_answers(segflow: Starter, sandbox: StartSandbox) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=())
    await sf.store.close()
    m = await scrape(sf)
    assert value(m, "segflow_store_up") == 0
    assert "process_cpu_seconds_total" in names(m)


async def test_the_dashboard_and_the_alerts_name_only_metrics_segflow_exports(
    segflow: Starter, sandbox: StartSandbox
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=())
    async with aiohttp.ClientSession() as http, http.get(f"{sf.url}/metrics") as r:
        text = await r.text()
    exported: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    for family in text_string_to_metric_families(text):
        exported |= {family.name, *(family.name + s for s in suffixes.get(family.type, ()))}
    folder = Path(__file__).parents[2] / "examples" / "observability"
    dashboard = orjson.loads((folder / "grafana-dashboard.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((folder / "alerts.yaml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    named = {n for e in exprs for n in re.findall(r"\b((?:segflow|process|python)_[a-z_]+)\b", e)}
    assert len(exprs) > 30 and len(named) > 15
    assert named <= exported, sorted(named - exported)
