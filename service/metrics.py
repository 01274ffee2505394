"""Prometheus metrics, one registry per process (no global state), served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric segflow exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.subscriptions_disabled = Counter(
            "segflow_subscriptions_disabled_total",
            "Subscriptions segflow disabled: their endpoint kept failing, or answered 410 Gone",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("segflow_upstream_in_flight", "Jobs that may have a live upstream task", registry=r)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
