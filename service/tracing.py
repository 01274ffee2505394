"""Tracing: OpenTelemetry spans along a job's path (batch request → upstream create → webhook or
poll → fetch → callbacks), joined into one trace across replicas by the W3C `traceparent` each
job keeps in the store (`jobs.trace_context`, set when the batch is accepted).

Off unless `SEGFLOW_TRACING=on`, or `auto` (the default) with `OTEL_EXPORTER_OTLP_ENDPOINT` (or its
`_TRACES_` form) set; the standard `OTEL_*` variables configure the rest. Off, `Tracing.enabled` is
False, nothing is instrumented and the helpers below return at once (the webhook hot path checks
`enabled` before doing anything).

Every span leaves through `Scrubber`: the instrumentations record URLs, and header values when an
operator asks for them, so each span is copied with query strings, webhook paths, secret headers
and every configured secret value removed before any exporter sees it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.routing import Match
from yarl import URL

from service.settings import ConfigError, Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

REDACTED = "[redacted]"
_W3C = TraceContextTextMapPropagator()
# Header values that are credentials, should an operator capture headers (OTEL_INSTRUMENTATION_HTTP_CAPTURE_*).
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-webhook-secret"}
)
# A query string may hold a signed link's signature; a webhook path may carry what proves a webhook.
_URL_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
_WEBHOOK_PATH = re.compile(r"/webhooks/[^\s?#\"'<>]+")
_SERVER_PATH_KEYS = ("url.path", "http.target")
_URL_KEYS = ("url.full", "http.url")
_QUERY_KEYS = ("url.query",)
_MIN_SECRET_CHARS = 8  # shorter values would blank ordinary text


def tracing_wanted(settings: Settings, environ: Mapping[str, str]) -> bool:
    """The OpenTelemetry conventions: OTEL_SDK_DISABLED wins, then SEGFLOW_TRACING, then an endpoint."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or settings.tracing == "off":
        return False
    if settings.tracing == "on":
        return True
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def exporters_from_env(environ: Mapping[str, str]) -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER (default otlp): otlp over HTTP/protobuf, console, or none."""
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    out: list[SpanExporter] = []
    for name in names:
        if name == "none":
            return []
        if name == "console":
            out.append(ConsoleSpanExporter())
        elif name == "otlp":
            out.append(_otlp_exporter(environ))
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER: {name!r} is not supported (otlp, console or none)")
    return out


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL: segflow exports http/protobuf only (got {protocol!r})")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*


def _resource(settings: Settings, instance_id: str, environ: Mapping[str, str]) -> Resource:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own_version = version("segflow")
    except PackageNotFoundError:  # running from a source tree
        own_version = "unknown"
    attributes: dict[str, str] = {"service.version": own_version, "service.instance.id": instance_id}
    named = "OTEL_SERVICE_NAME" in environ or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes["service.name"] = "segflow"
    return Resource.create(attributes)  # merged with OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value segflow is configured with, as the scrubber and the log redactor look for them."""
    keys = [pair.partition(":")[2] for pair in settings.api_keys]
    return [s for s in (*settings.webhook_keys, *keys, settings.upstream_api_key) if s]


class Tracing:
    """The tracer provider of one process (or none), and the helpers segflow's spans are made with."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer: trace.Tracer = provider.get_tracer("segflow") if provider else trace.NoOpTracer()
        self._asyncpg: Any = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        instance_id: str = "",
        *,
        environ: Mapping[str, str] | None = None,
        exporter: SpanExporter | None = None,
    ) -> Tracing:
        """Tracing as settings and the OTEL_* variables ask; `exporter` (tests) exports each span at once."""
        environ = os.environ if environ is None else environ
        if exporter is None and not tracing_wanted(settings, environ):
            return cls()
        exporters = [exporter] if exporter is not None else exporters_from_env(environ)
        if not exporters:
            return cls()
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        provider = TracerProvider(resource=_resource(settings, instance_id, environ))
        secrets = configured_secrets(settings)
        for exp in exporters:
            inner = SimpleSpanProcessor(exp) if exporter is not None else BatchSpanProcessor(exp)
            provider.add_span_processor(Scrubber(inner, secrets))
        return cls(provider)

    # instrumentation -------------------------------------------------------------------------

    def instrument_app(self, app: Starlette) -> None:
        """Server spans for every request, named by route template (no `send`/`receive` spans)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app.add_middleware(
            OpenTelemetryMiddleware,
            default_span_details=_span_details,
            tracer_provider=self.provider,
            meter_provider=NoOpMeterProvider(),  # HTTP metrics are Prometheus', in access_log.py
            exclude_spans=["receive", "send"],
        )

    def client_trace_configs(self, *, origin_only: bool = False) -> list[aiohttp.TraceConfig]:
        """aiohttp trace configs for one session: a client span per request and `traceparent` sent.
        `origin_only` records no path at all (a client's callback URL may be a capability)."""
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        url_filter = _origin if origin_only else _without_query
        return [
            create_trace_config(
                url_filter=url_filter, tracer_provider=self.provider, meter_provider=NoOpMeterProvider()
            )
        ]

    def instrument_asyncpg(self) -> None:
        """Spans for PostgreSQL queries made inside a span (asyncpg is patched process-wide)."""
        if self.provider is None or self._asyncpg is not None:
            return
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=self.provider)
            self._asyncpg = instrumentor

    async def close(self) -> None:
        """Flush what is buffered and stop exporting."""
        if self._asyncpg is not None:
            self._asyncpg.uninstrument()
            self._asyncpg = None
        if self.provider is not None:
            await asyncio.to_thread(self.provider.shutdown)

    # segflow's spans ---------------------------------------------------------------------------

    def start_job_spans(self, count: int) -> list[Span]:
        """One `segflow.job` span per accepted job, children of the current (batch request) span;
        each job stores its span's traceparent, and every later span of the job descends from it."""
        if not self.enabled:
            return []
        return [self.tracer.start_span("segflow.job", kind=SpanKind.PRODUCER) for _ in range(count)]

    @contextmanager
    def job_span(
        self, name: str, trace_context: str | None, attributes: Mapping[str, Any], kind: SpanKind = SpanKind.INTERNAL
    ) -> Iterator[Span]:
        """A span of the job whose stored `trace_context` is given, current inside the block (so
        the HTTP client spans of the block are its children); errors are recorded on it."""
        if not self.enabled:
            yield trace.INVALID_SPAN
            return
        with self.tracer.start_as_current_span(
            name, context=parent_context(trace_context), kind=kind, attributes=dict(attributes)
        ) as span:
            yield span

    def record_job_span(
        self, name: str, trace_context: str | None, *, start_ns: int, attributes: Mapping[str, Any]
    ) -> None:
        """A finished span of a job, for work that learns which job it served only at its end (a
        webhook): linked to the current span (the HTTP request's)."""
        if not self.enabled:
            return
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else []
        span = self.tracer.start_span(
            name, context=parent_context(trace_context), attributes=dict(attributes), links=links, start_time=start_ns
        )
        span.end()


def traceparent(span: Span) -> str | None:
    """The W3C traceparent of `span` (what a job stores), or None for an invalid span."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def parent_context(trace_context: str | None) -> Context:
    """The context a job's spans descend from; an empty one (a new trace) when the job has none."""
    return _W3C.extract({"traceparent": trace_context}) if trace_context else Context()


def _span_details(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Server span name and route from the route the request will match (routing happens later)."""
    method = str(scope.get("method", ""))
    app = scope.get("app")
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return f"{method} {route.path}", {"http.route": route.path}
    return method, {}


def _without_query(url: URL) -> str:
    return str(url.with_query(None).with_fragment(None).with_user(None))


def _origin(url: URL) -> str:
    return str(url.origin())


class Scrubber(SpanProcessor):
    """Hands `inner` a copy of each ended span with nothing secret in it, and drops root client
    spans (a worker's polling query outside any job span is noise, one trace per poll)."""

    def __init__(self, inner: SpanProcessor, secrets: Iterable[str] = ()) -> None:
        self._inner = inner
        self._secrets = tuple(sorted((s for s in secrets if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True))

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.parent is None and span.kind is SpanKind.CLIENT:
            return
        self._inner.on_end(self.scrubbed(span))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def scrubbed(self, span: ReadableSpan) -> ReadableSpan:
        server = span.kind is SpanKind.SERVER
        status = span.status
        if status.description:
            status = Status(status.status_code, self.text(status.description))
        return ReadableSpan(
            name=self.text(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self.attributes(span.attributes or {}, server=server),
            events=tuple(
                SpanEvent(e.name, self.attributes(e.attributes or {}, server=False), e.timestamp) for e in span.events
            ),
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def attributes(self, attributes: Mapping[str, Any], *, server: bool) -> dict[str, Any]:
        route = attributes.get("http.route")
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if _is_secret_header(key) or key in _QUERY_KEYS:
                out[key] = REDACTED
            elif server and key in _SERVER_PATH_KEYS:
                # The path itself may be the secret (a webhook's, a signed link's): keep its template.
                out[key] = str(route) if route else REDACTED
            elif server and key in _URL_KEYS and isinstance(value, str):
                out[key] = f"{URL(value).origin()}{route or ''}" if URL(value).absolute else REDACTED
            else:
                out[key] = self._value(value)
        return out

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Sequence) and not isinstance(value, bytes):
            return tuple(self.text(v) if isinstance(v, str) else v for v in value)
        return value

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if "?" in text:
            text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
        if "/webhooks/" in text:
            text = _WEBHOOK_PATH.sub(_webhook_path, text)
        return text


def _webhook_path(match: re.Match[str]) -> str:
    found = match.group(0)
    return found if "{" in found else f"/webhooks/{REDACTED}"  # a route template names no job


def _is_secret_header(key: str) -> bool:
    for prefix in ("http.request.header.", "http.response.header."):
        if key.startswith(prefix):
            return key[len(prefix) :].replace("_", "-").lower() in _SECRET_HEADERS
    return False
