"""Prometheus metrics, one registry per process (no global state), served at /metrics.

Counters and histograms count what this process did. The gauges of work in the store (jobs per
live state, in flight, fetch backlog, callback deliveries, the oldest live job) are the same on
every replica: they are read from the store at scrape time through partial indexes, so a scrape
costs a few index lookups however many jobs are stored (aggregate them with max, not sum).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from service.states import IN_FLIGHT, State

_LIVE_STATES = tuple(s for s in State if not s.is_terminal)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_TENANT = "_other"
UNMATCHED_ROUTE = "unmatched"
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GaugeSource(Protocol):
    async def gauge_counts(self) -> Mapping[str, float]: ...


def _version() -> str:
    try:
        return version("segflow")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


class TenantLabels:
    """A tenant's label value: its name for the first `limit` tenants seen, then `_other`, so a
    deployment with many tenants cannot blow up the number of series."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._named: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < self._limit:
            self._named.add(tenant)
            return tenant
        return OTHER_TENANT


class Metrics:
    """Every metric segflow exports."""

    def __init__(self, *, max_tenants: int = 20) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # The process, platform and GC collectors prometheus_client registers globally by default.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("segflow_build", "segflow's version and runtime", registry=r).info(
            {"version": _version(), "python": platform.python_version()}
        )
        self.tenant_label = TenantLabels(max_tenants)
        self.webhooks = Counter("segflow_webhooks_total", "Webhook deliveries by answer", ["outcome"], registry=r)
        self.transitions = Counter("segflow_transitions_total", "Job state changes", ["event", "source"], registry=r)
        self.upstream_calls = Counter(
            "segflow_upstream_calls_total",
            "Upstream calls by operation and result",
            ["op", "result"],
            registry=r,
        )
        self.polls = Counter("segflow_polls_total", "Reconciler polls by result", ["result"], registry=r)
        self.downloads = Counter("segflow_downloads_total", "Mask downloads by result", ["result"], registry=r)
        self.download_bytes = Counter("segflow_download_bytes_total", "Mask bytes stored", registry=r)
        self.callbacks = Counter(
            "segflow_callback_attempts_total", "Outbound callback attempts by outcome", ["outcome"], registry=r
        )
        self.creates_paused = Gauge(
            "segflow_creates_paused", "1 while the balance guard holds creates back (reason in /readyz)", registry=r
        )
        self.balance_usd = Gauge("segflow_upstream_balance_usd", "The account's usable balance, last read", registry=r)
        self.budget_holds = Counter(
            "segflow_budget_holds_total", "Jobs a spend cap held back, by what was done", ["action"], registry=r
        )
        self.preflights = Counter("segflow_preflights_total", "Image preflights by result", ["result"], registry=r)
        self.subscriptions_disabled = Counter(
            "segflow_subscriptions_disabled_total",
            "Subscriptions segflow disabled: their endpoint kept failing, or answered 410 Gone",
            ["reason"],
            registry=r,
        )
        self.spend = Counter(
            "segflow_spend_usd_total",
            "Upstream price of the masks this process stored, by tenant (the first tenants seen, then _other)",
            ["tenant"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "segflow_webhook_seconds",
            "Webhook handling time, durable write included",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.completion_to_stored = Histogram(
            "segflow_completion_to_stored_seconds",
            "From upstream completion seen to mask stored",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.http_requests = Counter(
            "segflow_http_requests_total",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "segflow_http_request_duration_seconds",
            "From request to the last byte of the answer, by method and route template",
            ["method", "route"],
            registry=r,
            buckets=_HTTP_BUCKETS,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        # Read from the store at scrape time -------------------------------------------------
        self.jobs = Gauge("segflow_jobs", "Jobs in each live state (store-wide)", ["state"], registry=r)
        self.in_flight = Gauge(
            "segflow_upstream_in_flight",
            "Jobs that may have a live upstream task: submitting, unknown, submitted (store-wide)",
            registry=r,
        )
        self.fetch_backlog = Gauge(
            "segflow_fetch_backlog", "Completed jobs whose masks wait to be downloaded (store-wide)", registry=r
        )
        self.deliveries = Gauge(
            "segflow_callback_deliveries",
            "Callback deliveries waiting (pending) or given up (dead), store-wide",
            ["state"],
            registry=r,
        )
        self.oldest_live = Gauge(
            "segflow_oldest_live_job_age_seconds",
            "Age of the oldest job not yet final (0 when none): stuck work shows here",
            registry=r,
        )
        self.store_up = Gauge("segflow_store_up", "1 when the last scrape could read the store", registry=r)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (this runs on every request, webhooks included)."""
        known = method if method in _METHODS else "other"
        self._child(self.http_requests, known, route, str(status)).inc()
        self._child(self.http_seconds, known, route).observe(seconds)

    def webhook_answered(self, outcome: str, seconds: float) -> None:
        """One webhook answered (every webhook comes here: its child is looked up once)."""
        self._child(self.webhooks, outcome).inc()
        self.webhook_seconds.observe(seconds)

    def transitioned(self, event: str, source: str) -> None:
        """One job state change (as above, on the hot path)."""
        self._child(self.transitions, event, source).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """The metric's child for `labels`, looked up once (the hot paths count through here)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def add_spend(self, tenant: str, usd: float) -> None:
        self.spend.labels(self.tenant_label(tenant)).inc(usd)

    async def refresh(self, store: GaugeSource) -> None:
        """Set the store-wide gauges from the store (raises what the store raises)."""
        counts = await store.gauge_counts()
        for state in _LIVE_STATES:
            self.jobs.labels(state.value).set(counts.get(state.value, 0))
        self.in_flight.set(sum(counts.get(s.value, 0) for s in IN_FLIGHT))
        self.fetch_backlog.set(counts.get(State.FETCHING.value, 0))
        self.deliveries.labels("pending").set(counts.get("deliveries_pending", 0))
        self.deliveries.labels("dead").set(counts.get("deliveries_dead", 0))
        oldest = counts.get("oldest_live_created_at")
        self.oldest_live.set(max(0.0, time.time() - oldest) if oldest else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
