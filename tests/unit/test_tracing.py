"""Tracing's pure parts: when it is on (the OpenTelemetry environment conventions), and what the
scrubber leaves of a span (nothing secret, whatever an instrumentation recorded)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.settings import ConfigError, Settings
from service.tracing import REDACTED, Scrubber, Tracing, exporters_from_env, parent_context, tracing_wanted

SECRET = "master-key-0123456789abcdef"
SIGNATURE = "sig-5b1e0c9d7a3f"


@pytest.mark.parametrize(
    ("tracing", "environ", "wanted"),
    [
        ("auto", {}, False),
        ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ("auto", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ("on", {}, True),
        ("off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ("on", {"OTEL_SDK_DISABLED": "true"}, False),
        ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_tracing_is_on_as_the_conventions_say(tracing: str, environ: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(Settings(tracing=tracing), environ) is wanted


def test_exporters_follow_otel_traces_exporter() -> None:
    assert exporters_from_env({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert Tracing.from_settings(Settings(tracing="on"), environ={"OTEL_TRACES_EXPORTER": "none"}).enabled is False
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        exporters_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigError, match="http/protobuf"):
        exporters_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_a_bad_tracing_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="SEGFLOW_TRACING"):
        Settings(tracing="yes")


def test_off_is_a_no_op() -> None:
    off = Tracing()
    assert off.start_job_spans(3) == [] and off.client_trace_configs() == []
    with off.job_span("segflow.fetch", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", {}) as span:
        assert not span.is_recording()
    off.record_job_span("segflow.webhook", None, start_ns=1, attributes={})


def test_a_stored_context_is_the_parent_and_none_starts_a_trace() -> None:
    ctx = parent_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    from opentelemetry import trace

    parent = trace.get_current_span(ctx).get_span_context()
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )
    assert not trace.get_current_span(parent_context(None)).get_span_context().is_valid


def scrubbed_spans() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(Scrubber(SimpleSpanProcessor(exporter), [SECRET, "short"]))
    return exporter, provider


def test_server_spans_keep_the_route_template_not_the_path_or_query() -> None:
    exporter, provider = scrubbed_spans()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /webhooks/qubico/{job_id}", kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {
                "http.route": "/webhooks/qubico/{job_id}",
                "http.target": "/webhooks/qubico/job-1/token-abc",
                "url.path": "/webhooks/qubico/job-1/token-abc",
                "http.url": f"http://127.0.0.1:8600/webhooks/qubico/job-1/token-abc?sig={SIGNATURE}",
                "url.query": f"sig={SIGNATURE}",
                "http.request.header.x_webhook_secret": ("whsec-per-job",),
                "http.request.header.authorization": ("Bearer acme-key",),
                "http.request.header.user_agent": ("sandbox",),
            }
        )
    (got,) = exporter.get_finished_spans()
    a = dict(got.attributes or {})
    assert got.name == "POST /webhooks/qubico/{job_id}"
    assert a["http.route"] == a["http.target"] == a["url.path"] == "/webhooks/qubico/{job_id}"
    assert a["http.url"] == "http://127.0.0.1:8600/webhooks/qubico/{job_id}"
    assert a["url.query"] == a["http.request.header.x_webhook_secret"] == REDACTED
    assert a["http.request.header.authorization"] == REDACTED
    assert a["http.request.header.user_agent"] == ("sandbox",)


def test_client_spans_lose_queries_secrets_and_webhook_paths_even_in_errors() -> None:
    exporter, provider = scrubbed_spans()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("segflow.fetch"), tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as s:
        s.set_attribute("http.url", f"https://img.example/m.png?X-Amz-Signature={SIGNATURE}")
        s.set_attribute("segflow.note", f"key {SECRET} and endpoint http://h/webhooks/qubico/job-1")
        s.record_exception(ValueError(f"400, url='https://img.example/m.png?sig={SIGNATURE}'"))
    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    text = repr(
        [(sp.name, dict(sp.attributes or {}), [dict(e.attributes or {}) for e in sp.events]) for sp in spans.values()]
    )
    assert SIGNATURE not in text and SECRET not in text and "job-1" not in text
    a = dict(spans["GET"].attributes or {})
    assert a["http.url"] == f"https://img.example/m.png?{REDACTED}"
    assert a["segflow.note"] == f"key {REDACTED} and endpoint http://h/webhooks/{REDACTED}"
    assert "short" in repr(Scrubber(SimpleSpanProcessor(exporter), ["short"]).text("short"))  # too short to hunt


def test_root_client_spans_are_dropped() -> None:
    exporter, provider = scrubbed_spans()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):  # a worker's poll of the database
        pass
    with tracer.start_as_current_span("segflow.poll"), tracer.start_as_current_span("GET", kind=SpanKind.CLIENT):
        pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["GET", "segflow.poll"]
