"""The sandbox's settings: one frozen object built once (CLI, fixture) and handed to the app factory."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_MB = 1024 * 1024

# Every fault kind, i.e. every FaultSettings field that is a probability; stats count them by these names.
FAULT_KINDS = (
    "webhook_drop",
    "webhook_duplicate",
    "webhook_delay",
    "webhook_reorder",
    "create_5xx",
    "create_lost",
    "create_hold",
    "burst_429",
    "task_fail",
    "task_fail_retryable",
    "get_5xx",
    "output_expire_early",
    "external_cancel",
    "temporary_urls",
    "base64_outputs",
    "multi_mask",
)
COUNT_FIELDS = ("burst_429_length", "multi_mask_count")
"""FaultSettings fields that are whole numbers (sizes), neither probabilities nor seconds."""
OVER_LIMIT_MODES = ("429", "stage")
BAD_IMAGE_MODES = ("fail", "400")
CANCEL_MODES = ("documented", "legacy")


@dataclass(frozen=True)
class FaultSettings:
    """Probabilities (0..1) of each injected fault, plus the few sizes that shape them."""

    webhook_drop: float = 0.0
    webhook_duplicate: float = 0.0
    webhook_delay: float = 0.0
    webhook_delay_s: float = 2.0
    webhook_reorder: float = 0.0
    create_5xx: float = 0.0
    create_lost: float = 0.0
    create_hold: float = 0.0
    create_hold_s: float = 30.0
    burst_429: float = 0.0
    burst_429_length: int = 5
    burst_429_retry_after_s: float = 1.0
    task_fail: float = 0.0
    task_fail_retryable: float = 0.0
    get_5xx: float = 0.0
    output_expire_early: float = 0.0
    # Variants the provider's documentation and public clients show (not faults, but chosen per
    # task like them): a task cancelled outside segflow (either spelling), masks only under
    # `temporary_image_urls`, masks only inline as `image_base64s`, several masks for one task.
    external_cancel: float = 0.0
    temporary_urls: float = 0.0
    base64_outputs: float = 0.0
    multi_mask: float = 0.0
    multi_mask_count: int = 4

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in COUNT_FIELDS:
                _require(
                    isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    f.name,
                    "must be an integer >= 1",
                )
            elif f.name.endswith("_s"):
                _require(_is_number(value) and 0.0 <= value < math.inf, f.name, "must be a number >= 0")
            else:
                _require(_is_number(value) and 0.0 <= value <= 1.0, f.name, "must be a probability in [0, 1]")

    def with_updates(self, updates: Mapping[str, Any]) -> FaultSettings:
        """A copy with some fields changed (e.g. from a PATCH body); ValueError names a bad field."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in updates:
            _require(name in known, name, "is not a fault setting")
        return dataclasses.replace(self, **dict(updates))

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SandboxSettings:
    """Everything the sandbox does is decided by these values (and `seed` for the random choices)."""

    host: str = "127.0.0.1"
    port: int = 8700
    public_url: str | None = None
    seed: int = 0
    api_keys: tuple[str, ...] = ("sandbox-key",)
    latency_min_s: float = 0.5
    latency_max_s: float = 2.0
    processing_webhook: bool = True
    webhook_retries: int = 3
    webhook_retry_interval_s: float = 5.0
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 64
    retention_s: float = 259200.0
    concurrency_limit: int = 0
    rate_limit_per_s: float = 0.0
    credit_usd: float | None = None
    # Over the concurrency limit a create is answered 429, or accepted as `staged` until a slot frees
    # (the provider documents the status, not which one it does).
    over_limit: str = "429"
    # The documented create example answers status "" (its webhooks and GETs then say pending).
    create_status: str = ""
    # An image that cannot be used fails its task after the create ("fail", what the documentation
    # points to: the create returns at once) or is refused with 400 at the create.
    bad_image: str = "fail"
    # "documented": only pending tasks are cancelled, answered {"code": 200, "message": "task <id>
    # canceled"} with no data, the task then reads `canceled`; "legacy": pending or staged, answered
    # with the task, which ends failed ("task cancelled by user").
    cancel: str = "documented"
    # Output URLs name this host instead (same port), which answers 302 to the real one: a redirect
    # from a second host name, as a CDN in front of the provider's storage would do.
    output_redirect_host: str | None = None
    fetch_timeout_s: float = 10.0
    max_image_bytes: int = 20 * _MB
    max_side_px: int = 3072
    log_format: str = "console"
    log_level: str = "info"
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        _require(isinstance(self.port, int) and 0 <= self.port <= 65535, "port", "must be in 0..65535")
        _require(bool(self.host), "host", "must not be empty")
        _require(
            self.public_url is None or self.public_url.startswith(("http://", "https://")),
            "public_url",
            "must be an http(s) URL",
        )
        _require(all(isinstance(k, str) and k for k in self.api_keys), "api_keys", "must be non-empty strings")
        _require(self.latency_min_s >= 0.0, "latency_min_s", "must be >= 0")
        _require(self.latency_min_s <= self.latency_max_s, "latency_max_s", "must be >= latency_min_s")
        _require(self.webhook_retries >= 0, "webhook_retries", "must be >= 0")
        _require(self.webhook_retry_interval_s >= 0, "webhook_retry_interval_s", "must be >= 0")
        _require(self.webhook_timeout_s > 0, "webhook_timeout_s", "must be > 0")
        _require(self.webhook_concurrency >= 1, "webhook_concurrency", "must be >= 1")
        _require(self.retention_s > 0, "retention_s", "must be > 0")
        _require(self.concurrency_limit >= 0, "concurrency_limit", "must be >= 0")
        _require(self.rate_limit_per_s >= 0, "rate_limit_per_s", "must be >= 0")
        _require(self.credit_usd is None or self.credit_usd >= 0, "credit_usd", "must be >= 0")
        _require(self.over_limit in OVER_LIMIT_MODES, "over_limit", "must be 429 or stage")
        _require(self.bad_image in BAD_IMAGE_MODES, "bad_image", "must be fail or 400")
        _require(self.cancel in CANCEL_MODES, "cancel", "must be documented or legacy")
        _require(self.create_status in ("", "pending"), "create_status", "must be '' or pending")
        _require(
            self.output_redirect_host is None
            or (bool(self.output_redirect_host) and "/" not in self.output_redirect_host),
            "output_redirect_host",
            "must be a host name",
        )
        _require(self.fetch_timeout_s > 0, "fetch_timeout_s", "must be > 0")
        _require(self.max_image_bytes > 0, "max_image_bytes", "must be > 0")
        _require(self.max_side_px > 0, "max_side_px", "must be > 0")
        _require(self.log_format in ("console", "json"), "log_format", "must be console or json")
        _require(isinstance(self.faults, FaultSettings), "faults", "must be a FaultSettings")

    @property
    def base_url(self) -> str:
        """Where output and sample URLs point: public_url, else the listening address."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def output_base_url(self) -> str:
        """Where output URLs point: base_url, with its host replaced by output_redirect_host if set."""
        if self.output_redirect_host is None:
            return self.base_url
        parts = urlsplit(self.base_url)
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, f"{self.output_redirect_host}{port}", parts.path, "", ""))

    def with_overrides(self, **overrides: Any) -> SandboxSettings:
        """A copy with fields changed; fault names (e.g. webhook_drop=1.0) go into `faults`."""
        own = {f.name for f in dataclasses.fields(self)}
        fault_names = {f.name for f in dataclasses.fields(FaultSettings)}
        top = {k: v for k, v in overrides.items() if k in own}
        fault_updates = {k: v for k, v in overrides.items() if k not in own}
        for name in fault_updates:
            _require(name in fault_names, name, "is not a sandbox setting")
        if fault_updates:
            top["faults"] = top.get("faults", self.faults).with_updates(fault_updates)
        return dataclasses.replace(self, **top)


def _is_host_name(value: str) -> bool:
    return bool(value) and not any(c in value for c in "/:@ ")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{name} {problem}")
