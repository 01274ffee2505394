"""Tracing through a real segflow and sandbox on loopback ports: a job's spans form one connected
trace, across two replicas that share nothing but the database, continuing the caller's trace and
reaching the callback receiver through `traceparent`. Spans are caught with the SDK's in-memory
exporter, after segflow's scrubber."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.fixtures.sandbox import RunningSandbox, StartSandbox, WebhookRecorder, wait_until
from tests.fixtures.segflow import TENANT_KEYS, Starter
from tests.integration.test_flow import wait_done

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def spans_of(*exporters: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for e in exporters for s in e.get_finished_spans()]


def named(spans: Sequence[ReadableSpan], name: str, job_id: str | None = None) -> list[ReadableSpan]:
    return [
        s for s in spans if s.name == name and (job_id is None or (s.attributes or {}).get("segflow.job.id") == job_id)
    ]


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def submit_traced(url: str, sb: RunningSandbox, callback_url: str, n: int = 1) -> dict[str, Any]:
    """POST a batch as a traced client would: with its own `traceparent`."""
    items = [{"image": sb.sample_url(), "prompt": f"car {i}"} for i in range(n)]
    headers = {
        "authorization": f"Bearer {TENANT_KEYS['acme']}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/batches", json={"items": items, "callback_url": callback_url}, headers=headers) as r,
    ):
        assert r.status == 202, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


async def test_a_job_is_one_connected_trace_across_replicas_into_the_receiver(
    segflow: Starter, sandbox: StartSandbox, webhook_recorder: WebhookRecorder, database_url: str
) -> None:
    sb = await sandbox()
    front, back = InMemorySpanExporter(), InMemorySpanExporter()
    # Replica B receives the webhooks, fetches and calls back; replica A takes the batch and creates
    # the task. They share only the database (and so only the stored trace context).
    b = await segflow(sb.url, roles=("fetcher", "deliverer", "reconciler"), span_exporter=back)
    a = await segflow(sb.url, roles=("submitter",), public_url=b.url, span_exporter=front)
    answer = await submit_traced(a.url, sb, webhook_recorder.endpoint("callbacks"))
    job_id = answer["jobs"][0]["job_id"]
    await wait_done(a, answer["batch_id"], 20)
    received = await webhook_recorder.wait_for(2)  # job.succeeded and batch.completed
    await wait_until(lambda: len(named(spans_of(back), "segflow.callback")) >= 2, what="callback spans")
    spans = spans_of(front, back)

    # The batch request continues the caller's trace; the job's span is its child and stored.
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /v1/batches"]
    assert request.parent is not None and f"{request.parent.span_id:016x}" == CLIENT_SPAN
    (job,) = named(spans, "segflow.job", job_id)
    assert job.parent is not None and request.context is not None and job.parent.span_id == request.context.span_id
    if database_url.startswith("postgresql"):
        # asyncpg's spans: a request's reads are its children (writes are group-committed by the
        # store's writer, one transaction for many callers, outside any request's trace).
        reads = [s for s in spans if s.name == "GET /v1/batches/{batch_id}"]
        statements = [str((c.attributes or {}).get("db.statement")) for r in reads for c in children(spans, r)]
        assert any(st.startswith("SELECT") and "batches" in st for st in statements), statements
    trace_id, job_span_id = hex_ids(job)
    assert trace_id == CLIENT_TRACE
    row = await b.store.get_job(job_id)
    assert row.trace_context == f"00-{trace_id}-{job_span_id}-01"

    # Every step of the job, on either replica, descends from the job span.
    (submit,) = named(front.get_finished_spans(), "segflow.submit", job_id)
    (webhook, *_) = named(back.get_finished_spans(), "segflow.webhook", job_id)
    (fetch,) = named(back.get_finished_spans(), "segflow.fetch", job_id)
    for step in (submit, webhook, fetch):
        assert step.parent is not None and step.parent.span_id == job.context.span_id, step.name
        assert hex_ids(step)[0] == trace_id
    assert (submit.attributes or {}).get("segflow.task.id") == row.task_id
    create = children(spans, submit)
    assert [(s.kind, s.name) for s in create] == [(SpanKind.CLIENT, "POST")]  # the upstream create
    assert [s.kind for s in children(spans, fetch)] and all(s.kind is SpanKind.CLIENT for s in children(spans, fetch))
    # The webhook's span links to the HTTP request that carried it (a trace of its own).
    (link,) = webhook.links
    server = [s for s in spans if s.context is not None and s.context.span_id == link.context.span_id]
    assert [s.name for s in server] == ["POST /webhooks/qubico/{job_id}/{attempt}"]

    # One connected trace: every span of it has its parent in it (the caller's span aside).
    in_trace = [s for s in spans if hex_ids(s)[0] == trace_id]
    ids = {hex_ids(s)[1] for s in in_trace} | {CLIENT_SPAN}
    assert all(s.parent is not None and f"{s.parent.span_id:016x}" in ids for s in in_trace)
    assert {"segflow.job", "segflow.submit", "segflow.webhook", "segflow.fetch", "segflow.callback"} <= {
        s.name for s in in_trace
    }

    # The receiver got the trace: each callback's traceparent names the POST span under its callback span.
    posts = {hex_ids(p)[1]: cb for cb in named(in_trace, "segflow.callback") for p in children(spans, cb)}
    for hook in received:
        version, got_trace, parent, flags = hook.headers["traceparent"].split("-")
        assert (version, got_trace, flags) == ("00", trace_id, "01")
        assert parent in posts, "the receiver's parent span is a callback POST of this trace"


async def test_a_polled_job_keeps_its_trace(segflow: Starter, sandbox: StartSandbox) -> None:
    sb = await sandbox(webhook_drop=1.0)  # no webhook ever arrives: the reconciler learns by polling
    exporter = InMemorySpanExporter()
    sf = await segflow(sb.url, span_exporter=exporter)
    answer = await sf.client.create_batch([{"image": sb.sample_url(), "prompt": "car"}])
    job_id = answer["jobs"][0]["job_id"]
    await wait_done(sf, answer["batch_id"], 20)
    await wait_until(lambda: named(exporter.get_finished_spans(), "segflow.fetch", job_id), what="fetch span")
    spans = exporter.get_finished_spans()
    (job,) = named(spans, "segflow.job", job_id)
    polls = named(spans, "segflow.poll", job_id)
    assert polls and not named(spans, "segflow.webhook", job_id)
    for poll in polls:
        assert poll.parent is not None and job.context is not None and poll.parent.span_id == job.context.span_id
        assert [s.name for s in children(spans, poll)] == ["GET"]  # the upstream GET /task/{id}


@pytest.mark.parametrize("setting", [{}, {"tracing": "off"}])
async def test_with_tracing_off_nothing_is_instrumented_and_no_context_stored(
    segflow: Starter, sandbox: StartSandbox, setting: dict[str, str]
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, roles=(), **setting)  # no OTEL_* endpoint in the test environment
    assert not sf.services.tracing.enabled
    assert sf.services.tracing.client_trace_configs() == []
    answer = await sf.client.create_batch([{"image": sb.sample_url(), "prompt": "car"}])
    row = await sf.store.get_job(answer["jobs"][0]["job_id"])
    assert row.trace_context is None
