"""`segflow sandbox`: flags for every setting and fault, and a uvicorn server to run it."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Any

import structlog
import uvicorn

from service.logs import configure_logging
from service.sandbox.app import create_sandbox_app
from service.sandbox.masks import SYNTHETIC_NOTE
from service.sandbox.settings import COUNT_FIELDS, FAULT_KINDS, FaultSettings, SandboxSettings
from service.serving import bind_socket

# (flag, settings field, type, help) for the plain settings; faults are generated from FaultSettings.
_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--host", "host", str, "interface to listen on"),
    ("--port", "port", int, "port to listen on (0 picks a free one)"),
    ("--public-url", "public_url", str, "base of output and sample URLs (default http://HOST:PORT)"),
    ("--seed", "seed", int, "seed of every random decision"),
    ("--latency-min", "latency_min_s", float, "shortest time from create to final state, seconds"),
    ("--latency-max", "latency_max_s", float, "longest time from create to final state, seconds"),
    ("--webhook-retries", "webhook_retries", int, "extra attempts after a failed webhook"),
    ("--webhook-retry-interval", "webhook_retry_interval_s", float, "seconds between webhook attempts"),
    ("--webhook-timeout", "webhook_timeout_s", float, "seconds before a webhook attempt counts as failed"),
    ("--retention", "retention_s", float, "seconds from creation until an output is deleted"),
    ("--concurrency-limit", "concurrency_limit", int, "unfinished tasks per API key (0 = no limit)"),
    ("--rate-limit", "rate_limit_per_s", float, "creates per second per API key (0 = no limit)"),
    ("--credit", "credit_usd", float, "account credit in USD; 402 once spent (default unlimited)"),
    ("--over-limit", "over_limit", str, "over the concurrency limit: 429 (default) or stage (accept as staged)"),
    ("--create-status", "create_status", str, "status in the create answer: '' (documented, default) or pending"),
    ("--bad-image", "bad_image", str, "an unusable image: fail (the task fails after the create, default) or 400"),
    ("--cancel", "cancel", str, "documented (pending only, answer without data, default) or legacy"),
    ("--output-redirect-host", "output_redirect_host", str, "serve outputs via a 302 from this host name"),
    ("--log-format", "log_format", str, "console or json"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's flags; every default is None so SandboxSettings' own defaults apply."""
    for flag, dest, kind, text in _OPTIONS:
        metavar = (
            "SECONDS"
            if dest.endswith("_s") and "per_s" not in dest
            else flag.removeprefix("--").upper().replace("-", "_")
        )
        parser.add_argument(flag, dest=f"sandbox_{dest}", type=kind, default=None, metavar=metavar, help=text)
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        dest="sandbox_api_keys",
        action="append",
        default=None,
        help="accepted x-api-key (repeatable; default sandbox-key)",
    )
    parser.add_argument("--any-key", dest="sandbox_any_key", action="store_true", help="accept any non-empty x-api-key")
    parser.add_argument(
        "--no-processing-webhook",
        dest="sandbox_no_processing_webhook",
        action="store_true",
        help="send webhooks on creation and the final state only",
    )
    faults = parser.add_argument_group("faults", "probabilities in [0, 1] (0 = never, 1 = always)")
    for field in dataclasses.fields(FaultSettings):
        kind = int if field.name in COUNT_FIELDS else float
        metavar = "N" if kind is int else "SECONDS" if field.name.endswith("_s") else "P"
        faults.add_argument(
            _flag(field.name),
            dest=f"fault_{field.name}",
            type=kind,
            default=None,
            metavar=metavar,
            help=f"default {field.default}",
        )
    # settings_from_args reports a bad value through this parser, as a usage error rather than a traceback.
    parser.set_defaults(sandbox_parser=parser)


def settings_from_args(args: argparse.Namespace) -> SandboxSettings:
    """Build settings from parsed flags; flags left out keep the defaults."""
    values: dict[str, Any] = {}
    for _flag_name, dest, _kind, _text in _OPTIONS:
        value = getattr(args, f"sandbox_{dest}", None)
        if value is not None:
            values[dest] = value
    if getattr(args, "sandbox_any_key", False):
        values["api_keys"] = ()
    elif getattr(args, "sandbox_api_keys", None):
        values["api_keys"] = tuple(args.sandbox_api_keys)
    if getattr(args, "sandbox_no_processing_webhook", False):
        values["processing_webhook"] = False
    for field in dataclasses.fields(FaultSettings):
        value = getattr(args, f"fault_{field.name}", None)
        if value is not None:
            values[field.name] = value
    try:
        return SandboxSettings().with_overrides(**values)
    except ValueError as exc:
        parser = getattr(args, "sandbox_parser", None)
        if isinstance(parser, argparse.ArgumentParser):
            parser.error(str(exc))  # exits with status 2
        raise


def run(settings: SandboxSettings) -> int:
    """Serve the sandbox until interrupted."""
    configure_logging(settings.log_format, settings.log_level, secrets=settings.api_keys)
    sock = bind_socket(settings.host, settings.port)
    port = sock.getsockname()[1]
    if port != settings.port:  # --port 0: the URLs in tasks must name the port actually bound
        settings = settings.with_overrides(port=port)
    app = create_sandbox_app(settings)
    config = uvicorn.Config(app, access_log=False, log_config=None, lifespan="on", timeout_graceful_shutdown=3)
    log = structlog.get_logger("segflow.sandbox")
    log.info(
        "sandbox_listening",
        url=settings.base_url,
        masks=SYNTHETIC_NOTE,
        faults={k: v for k, v in settings.faults.as_dict().items() if v and k in FAULT_KINDS},
    )
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        sock.close()
    return 0
