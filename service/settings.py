"""Settings: one object, loaded once from config/segflow.toml and SEGFLOW_* variables, passed down.

Each field lives in a TOML section under a key; its environment variable is SEGFLOW_ + the field
name in capitals (`database_url` ← `[database] url` ← `SEGFLOW_DATABASE_URL`). Secrets are read only
from the environment: a secret found in the file stops start-up.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """The configuration is invalid; the message names the option."""


def _opt(section: str, key: str, default: Any, *, secret: bool = False) -> Any:
    return field(default=default, metadata={"section": section, "key": key, "secret": secret})


@dataclass(frozen=True)
class Settings:
    # [server]
    host: str = _opt("server", "host", "127.0.0.1")
    port: int = _opt("server", "port", 8600)
    public_url: str = _opt("server", "public_url", "http://127.0.0.1:8600")
    max_webhook_body: int = _opt("server", "max_webhook_body", 262_144)
    max_request_body: int = _opt("server", "max_request_body", 4_194_304)
    log_format: str = _opt("server", "log_format", "console")
    log_level: str = _opt("server", "log_level", "info")
    instance_id: str = _opt("server", "instance_id", "")
    header_timeout_s: float = _opt("server", "header_timeout_s", 10.0)
    body_timeout_s: float = _opt("server", "body_timeout_s", 60.0)
    keep_alive_s: float = _opt("server", "keep_alive_s", 5.0)
    max_connections: int = _opt("server", "max_connections", 1000)
    max_header_bytes: int = _opt("server", "max_header_bytes", 16_384)
    legacy_webhook_path: bool = _opt("server", "legacy_webhook_path", True)
    # [database]
    database_url: str = _opt("database", "url", "sqlite:///.segflow/segflow.db")
    group_commit_max: int = _opt("database", "group_commit_max", 256)
    # [upstream]
    upstream_url: str = _opt("upstream", "url", "http://127.0.0.1:8700")
    upstream_api_key: str = _opt("upstream", "api_key", "", secret=True)
    upstream_connect_timeout_s: float = _opt("upstream", "connect_timeout_s", 5.0)
    upstream_timeout_s: float = _opt("upstream", "timeout_s", 30.0)
    upstream_service_mode: str = _opt("upstream", "service_mode", "")
    upstream_is_sandbox: bool = _opt("upstream", "is_sandbox", False)
    upstream_max_body: int = _opt("upstream", "max_body", 8_388_608)
    # [jobs]
    max_attempts: int = _opt("jobs", "max_attempts", 3)
    max_batch_items: int = _opt("jobs", "max_batch_items", 1000)
    max_age_s: float = _opt("jobs", "max_age_s", 172_800.0)
    allow_private_image_urls: bool = _opt("jobs", "allow_private_image_urls", False)
    # [submitter]
    max_in_flight: int = _opt("submitter", "max_in_flight", 50)
    max_fetch_backlog: int = _opt("submitter", "max_fetch_backlog", 200)
    creates_per_s: float = _opt("submitter", "creates_per_s", 10.0)
    submit_batch: int = _opt("submitter", "batch", 32)
    submit_concurrency: int = _opt("submitter", "concurrency", 16)
    submit_lease_s: float = _opt("submitter", "lease_s", 15.0)
    submit_backoff_base_s: float = _opt("submitter", "backoff_base_s", 2.0)
    submit_backoff_max_s: float = _opt("submitter", "backoff_max_s", 300.0)
    submit_interval_s: float = _opt("submitter", "interval_s", 1.0)
    # [spend]
    preflight: bool = _opt("spend", "preflight", True)
    preflight_timeout_s: float = _opt("spend", "preflight_timeout_s", 5.0)
    tenant_max_in_flight: int = _opt("spend", "tenant_max_in_flight", 0)
    tenant_daily_usd: float = _opt("spend", "tenant_daily_usd", 0.0)
    tenant_monthly_usd: float = _opt("spend", "tenant_monthly_usd", 0.0)
    budget_recheck_s: float = _opt("spend", "budget_recheck_s", 30.0)
    balance_reserve_usd: float = _opt("spend", "balance_reserve_usd", 1.0)
    balance_check_s: float = _opt("spend", "balance_check_s", 30.0)
    # [reconciler]
    reconcile_interval_s: float = _opt("reconciler", "interval_s", 2.0)
    poll_after_s: float = _opt("reconciler", "poll_after_s", 30.0)
    poll_backoff_max_s: float = _opt("reconciler", "poll_backoff_max_s", 600.0)
    staged_poll_after_s: float = _opt("reconciler", "staged_poll_after_s", 120.0)
    adoption_window_s: float = _opt("reconciler", "adoption_window_s", 600.0)
    adoption_floor_s: float = _opt("reconciler", "adoption_floor_s", 30.0)
    poll_floor_s: float = _opt("reconciler", "poll_floor_s", 3.0)
    history_lookup: bool = _opt("reconciler", "history_lookup", True)
    history_settle_s: float = _opt("reconciler", "history_settle_s", 5.0)
    reconcile_batch: int = _opt("reconciler", "batch", 200)
    reconcile_concurrency: int = _opt("reconciler", "concurrency", 8)
    # [artifacts]
    artifact_dir: str = _opt("artifacts", "dir", ".segflow/artifacts")
    artifact_url: str = _opt("artifacts", "url", "")
    s3_endpoint_url: str = _opt("artifacts", "s3_endpoint_url", "")
    artifact_link_ttl_s: float = _opt("artifacts", "link_ttl_s", 86_400.0)
    artifact_max_bytes: int = _opt("artifacts", "max_bytes", 52_428_800)
    download_timeout_s: float = _opt("artifacts", "download_timeout_s", 30.0)
    output_hosts: tuple[str, ...] = _opt("artifacts", "output_hosts", ("img.theapi.app", "img.midjourneyapi.xyz"))
    download_max_redirects: int = _opt("artifacts", "max_redirects", 3)
    fetch_batch: int = _opt("artifacts", "batch", 32)
    fetch_concurrency: int = _opt("artifacts", "concurrency", 8)
    fetch_lease_s: float = _opt("artifacts", "lease_s", 120.0)
    fetch_interval_s: float = _opt("artifacts", "interval_s", 1.0)
    # [callbacks]
    callback_timeout_s: float = _opt("callbacks", "timeout_s", 10.0)
    callback_retry_schedule_s: tuple[float, ...] = _opt(
        "callbacks", "retry_schedule_s", (60.0, 1800.0, 14400.0, 72000.0)
    )
    callback_per_endpoint: int = _opt("callbacks", "per_endpoint", 4)
    callback_batch: int = _opt("callbacks", "batch", 64)
    callback_lease_s: float = _opt("callbacks", "lease_s", 60.0)
    callback_interval_s: float = _opt("callbacks", "interval_s", 1.0)
    # [retention]: days each kind is kept once old enough (0 = forever)
    retention_masks_days: float = _opt("retention", "masks_days", 30.0)
    retention_inputs_days: float = _opt("retention", "inputs_days", 7.0)
    retention_jobs_days: float = _opt("retention", "jobs_days", 90.0)
    retention_outbox_days: float = _opt("retention", "outbox_days", 30.0)
    prune_interval_s: float = _opt("retention", "interval_s", 600.0)
    prune_batch: int = _opt("retention", "batch", 200)
    prune_pause_s: float = _opt("retention", "pause_s", 0.05)
    callback_max_subscriptions: int = _opt("callbacks", "max_subscriptions", 20)
    callback_replays_per_minute: int = _opt("callbacks", "replays_per_minute", 10)
    callback_retry_after_max_s: float = _opt("callbacks", "retry_after_max_s", 3600.0)
    callback_slow_down_s: float = _opt("callbacks", "slow_down_s", 5.0)
    callback_slow_down_max_s: float = _opt("callbacks", "slow_down_max_s", 600.0)
    callback_disable_after_s: float = _opt("callbacks", "disable_after_s", 432_000.0)
    callback_rotation_overlap_s: float = _opt("callbacks", "rotation_overlap_s", 86_400.0)
    # [quotas]: per tenant, shared by every replica (kept in the store); 0 turns one off
    quota_upload_bytes_per_day: int = _opt("quotas", "upload_bytes_per_day", 1_073_741_824)
    quota_queued_jobs: int = _opt("quotas", "queued_jobs", 100_000)
    quota_batches_per_minute: int = _opt("quotas", "batches_per_minute", 120)
    # [observability]
    tracing: str = _opt("observability", "tracing", "auto")
    metrics_port: int = _opt("observability", "metrics_port", 0)
    metrics_host: str = _opt("observability", "metrics_host", "")
    access_log: bool = _opt("observability", "access_log", True)
    metrics_max_tenants: int = _opt("observability", "metrics_max_tenants", 20)
    # [security]: secrets, environment only
    webhook_keys: tuple[str, ...] = _opt("security", "webhook_keys", (), secret=True)
    api_keys: tuple[str, ...] = _opt("security", "api_keys", (), secret=True)

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the database is SQLite."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None

    def __repr__(self) -> str:
        shown = {
            f.name: ("[redacted]" if f.metadata["secret"] else getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        return f"Settings({shown})"


def _validate(s: Settings) -> None:
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if f.type in ("int", "float") and isinstance(value, int | float) and value < 0:
            raise ConfigError(f"{_where(f)}: must not be negative (got {value})")
    for name in (
        "max_attempts",
        "max_in_flight",
        "submit_batch",
        "submit_concurrency",
        "reconcile_batch",
        "callback_per_endpoint",
        "callback_batch",
        "callback_max_subscriptions",
        "reconcile_concurrency",
        "fetch_batch",
        "fetch_concurrency",
        "group_commit_max",
        "max_batch_items",
        "prune_batch",
        "max_connections",
        "max_header_bytes",
    ):
        if getattr(s, name) < 1:
            raise ConfigError(f"{_where(_field(name))}: must be at least 1")
    if s.max_attempts > 8:
        raise ConfigError(f"{_where(_field('max_attempts'))}: at most 8")
    for name in ("public_url", "upstream_url"):
        parts = urlsplit(getattr(s, name))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{_where(_field(name))}: must be an http(s) URL")
    if not (s.database_url.startswith("sqlite:///") or s.database_url.startswith(("postgresql://", "postgres://"))):
        raise ConfigError(f"{_where(_field('database_url'))}: use sqlite:///PATH or postgresql://…")
    if s.log_format not in ("console", "json"):
        raise ConfigError(f"{_where(_field('log_format'))}: 'console' or 'json'")
    if s.tracing not in ("auto", "on", "off"):
        raise ConfigError(f"{_where(_field('tracing'))}: 'auto', 'on' or 'off'")
    if s.metrics_port > 65535:
        raise ConfigError(f"{_where(_field('metrics_port'))}: a TCP port (0: serve /metrics on the main port)")
    if s.upstream_service_mode not in ("", "public", "private"):
        raise ConfigError(f"{_where(_field('upstream_service_mode'))}: '', 'public' or 'private'")
    for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{_where(_field(name))}: must be more than 0")
    if s.download_max_redirects > 10:
        raise ConfigError(f"{_where(_field('download_max_redirects'))}: at most 10")
    for key in s.webhook_keys:
        if len(key) < 16:
            raise ConfigError("SEGFLOW_WEBHOOK_KEYS: each key must be at least 16 characters")
    for pair in s.api_keys:
        tenant, sep, key = pair.partition(":")
        if not sep or not tenant or len(key) < 16:
            raise ConfigError("SEGFLOW_API_KEYS: use tenant:key pairs, keys at least 16 characters")
    if s.artifact_url and not s.artifact_url.startswith(("file:///", "s3://")):
        raise ConfigError(f"{_where(_field('artifact_url'))}: file:///PATH or s3://BUCKET[/PREFIX]")
    if s.artifact_url.startswith("s3://") and not urlsplit(s.artifact_url).netloc:
        raise ConfigError(f"{_where(_field('artifact_url'))}: s3://BUCKET[/PREFIX] needs a bucket")
    if s.s3_endpoint_url:
        parts = urlsplit(s.s3_endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ConfigError(f"{_where(_field('s3_endpoint_url'))}: an http(s) URL without credentials")
    if not 60 <= s.artifact_link_ttl_s <= 30 * 86_400:
        raise ConfigError(f"{_where(_field('artifact_link_ttl_s'))}: between 60 s and 30 days")
    for host in s.output_hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            continue
        raise ConfigError(f"{_where(_field('output_hosts'))}: list host names, not addresses ({host})")


def check_for_service(s: Settings) -> None:
    """What a running segflow process needs beyond well-formed settings (checked at start-up, so
    `Settings()` stays constructible for tools and tests)."""
    if not s.webhook_keys:
        raise ConfigError("SEGFLOW_WEBHOOK_KEYS: required (comma-separated, first signs, all verify)")
    if not s.upstream_is_sandbox and len(s.upstream_api_key) < 16:
        # A real provider key is long: a short one is a placeholder. The sandbox takes any key.
        raise ConfigError(
            f"SEGFLOW_UPSTREAM_API_KEY: at least 16 characters against a real upstream "
            f"(got {len(s.upstream_api_key)}; set {_where(_field('upstream_is_sandbox'))} for the sandbox)"
        )


def _field(name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(Settings) if f.name == name)


def _where(f: dataclasses.Field[Any]) -> str:
    return f"[{f.metadata['section']}] {f.metadata['key']} (SEGFLOW_{f.name.upper()})"


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from a TOML file (optional), then SEGFLOW_* variables, then explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    file_path = path or environ.get("SEGFLOW_CONFIG")
    if file_path:
        values.update(_from_toml(Path(file_path)))
    for f in dataclasses.fields(Settings):
        raw = environ.get(f"SEGFLOW_{f.name.upper()}")
        if raw is not None:
            values[f.name] = _coerce(f, raw)
    values.update(overrides)
    try:
        return Settings(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    by_place = {(f.metadata["section"], f.metadata["key"]): f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section]")
        for key, value in table.items():
            f = by_place.get((section, key))
            if f is None:
                raise ConfigError(f"{path}: unknown option [{section}] {key}")
            if f.metadata["secret"]:
                raise ConfigError(f"{_where(f)}: a secret; set it in the environment, not the file")
            values[f.name] = _typed(f, value)
    return values


def _typed(f: dataclasses.Field[Any], value: Any) -> Any:
    if f.type == "tuple[float, ...]":
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{_where(f)}: a list of numbers")
        return tuple(float(v) for v in value)
    if f.type.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{_where(f)}: a list of strings")
        return tuple(value)
    kinds: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "bool": bool, "str": str}
    expected = kinds[str(f.type)]
    if not isinstance(value, expected) or (f.type in ("int", "float") and isinstance(value, bool)):
        raise ConfigError(f"{_where(f)}: expected {f.type}, got {value!r}")
    return float(value) if f.type == "float" and isinstance(value, int | float) else value


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    try:
        if f.type == "tuple[float, ...]":
            return tuple(float(p) for p in raw.split(",") if p.strip())
        if f.type.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if f.type == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if f.type == "int":
            return int(raw)
        if f.type == "float":
            return float(raw)
        return raw
    except ValueError:
        shown = "[redacted]" if f.metadata["secret"] else repr(raw)
        raise ConfigError(f"{_where(f)}: expected {f.type}, got {shown}") from None
