"""The `segflow` command line.

Client commands (submit, status, results, events, subscriptions) exit 0 when done, 1 when jobs
ended without a mask, 2 on bad usage or input, 3 when segflow refused, 4 when it could not be
reached, 5 when --wait timed out (service/cli_client.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from service import cli_client
from service.cli_client import add_client_args
from service.settings import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _logging(settings: Settings) -> None:
    from service.logs import configure_logging

    configure_logging(
        settings.log_format,
        settings.log_level,
        # API keys are configured as tenant:key; the key alone is what could reach a log line.
        secrets=[*settings.webhook_keys, *(p.partition(":")[2] for p in settings.api_keys), settings.upstream_api_key],
    )


# serve / worker / migrate / keys ------------------------------------------------------------


async def _serve(settings: Settings, roles: Sequence[str]) -> int:
    import signal

    import uvicorn

    from service.app import create_app
    from service.context import open_services
    from service.serving import server_config

    services = await open_services(settings)
    try:
        app = create_app(services, roles=roles)
        config = server_config(app, settings, host=settings.host, port=settings.port, timeout_graceful_shutdown=10)
        # uvicorn re-raises SIGTERM once it has shut down; with the default handler that killed the
        # process before the finally below (no store close, buffered spans lost). A no-op handler
        # lets the stop finish cleanly: exit 0.
        signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
        async with _metrics_listener(services):
            await uvicorn.Server(config).serve()
    finally:
        await services.close()
    return 0


def _metrics_listener(services: Any) -> contextlib.AbstractAsyncContextManager[object]:
    """/metrics on SEGFLOW_METRICS_PORT while the block runs (nothing when the port is 0)."""
    from service.app import metrics_app
    from service.serving import bind_socket, serve_in_loop

    s = services.settings
    if not s.metrics_port:
        return contextlib.nullcontext()
    return serve_in_loop(metrics_app(services), sock=bind_socket(s.metrics_host or s.host, s.metrics_port))


async def _worker(settings: Settings, roles: Sequence[str]) -> int:
    import signal

    from service.context import open_services
    from service.workers import Roles

    services = await open_services(settings)
    running = Roles(services, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await running.start()
    try:
        async with _metrics_listener(services):
            await stop.wait()
    finally:
        await running.stop()
        await services.close()
    return 0


async def _migrate(settings: Settings) -> int:
    from service.store import open_store_for

    store = open_store_for(settings.database_url)
    await store.open()  # opening applies every pending migration
    await store.close()
    print(f"schema up to date: {settings.database_url.split('@')[-1]}")
    return 0


async def _prune(settings: Settings, dry_run: bool) -> int:
    from rich.console import Console

    from service.artifacts import open_backend
    from service.progress import facts_table
    from service.pruner import Pruning
    from service.store import open_store_for

    store = open_store_for(settings.database_url)
    await store.open()
    backend = open_backend(settings.artifact_url, settings.artifact_dir, settings.s3_endpoint_url)
    console = Console()
    try:
        pruning = Pruning(store, backend, settings)
        if dry_run:
            plan = await pruning.plan()
            r = plan.rows
            facts = [
                ("storage", backend.description),
                ("masks", f"{r.masks} ({r.mask_bytes} bytes)" if plan.cutoffs.masks else "kept forever"),
                ("jobs", f"{r.jobs} with {r.events} events" if plan.cutoffs.jobs else "kept forever"),
                ("outbox events", str(r.outbox) if plan.cutoffs.outbox else "kept forever"),
                ("inputs", f"{len(plan.inputs)} ({plan.input_bytes} bytes)" if plan.cutoffs.inputs else "kept forever"),
                ("abandoned uploads", str(plan.staged)),
            ]
            console.print(facts_table("would be deleted (dry run: nothing changed)", facts))
        else:
            report = await pruning.run()
            console.print(facts_table("deleted", [(k, str(v)) for k, v in report.as_dict().items()]))
    finally:
        await backend.close()
        await store.close()
    return 0


async def _keys_create(settings: Settings, tenant: str, label: str) -> int:
    from service.api.keys import hash_key, new_key
    from service.store import open_store_for

    store = open_store_for(settings.database_url)
    await store.open()
    try:
        key = new_key()
        await store.add_api_key(tenant, hash_key(key), label)
    finally:
        await store.close()
    print(key)
    print(f"(tenant {tenant}; shown once, stored hashed)", file=sys.stderr)
    return 0


# the parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from service.sandbox import cli as sandbox_cli
    from service.workers import ALL_ROLES

    parser = argparse.ArgumentParser(prog="segflow", description=__doc__)
    parser.add_argument("--config", help="TOML file (default: SEGFLOW_CONFIG, else built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True)

    sv = sub.add_parser("serve", help="API, webhook receiver and every worker in one process")
    sv.add_argument(
        "--no-workers",
        action="store_true",
        help="HTTP only (API and webhooks); run the roles with `segflow worker`",
    )
    w = sub.add_parser("worker", help="background roles only, no HTTP")
    w.add_argument("--role", action="append", choices=ALL_ROLES, required=True)
    sandbox_cli.add_arguments(sub.add_parser("sandbox", help="the local stand-in for the upstream API"))
    sub.add_parser("migrate", help="apply pending schema migrations")
    pr = sub.add_parser("prune", help="delete what the retention settings say is old (the pruner role, once)")
    pr.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    kc = keys.add_parser("create", help="create an API key for a tenant (printed once)")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--label", default="")

    s = sub.add_parser("submit", help="submit images (files, URLs) or a CSV with prompts")
    s.add_argument("sources", nargs="*", help="image files or http(s) URLs")
    s.add_argument("--prompt", action="append", help="what to segment; repeat for several prompts")
    s.add_argument("--negative-prompt", default="")
    s.add_argument("--segment-factor", type=int, default=0)
    s.add_argument("--csv", help="CSV with columns image,prompt[,negative_prompt,segment_factor]")
    s.add_argument("--callback-url")
    s.add_argument(
        "--idempotency-key", help="run the same command again without paying twice (one key per batch: KEY-NofM)"
    )
    s.add_argument(
        "--batch-size",
        type=int,
        default=int(os.environ.get("SEGFLOW_MAX_BATCH_ITEMS", cli_client.DEFAULT_BATCH_SIZE)),
        help="items per batch: more are split into several batches, reported as one run "
        "(default: SEGFLOW_MAX_BATCH_ITEMS or 1000, the server's default max_batch_items)",
    )
    s.add_argument("--wait", action="store_true", help="show progress until every job is final")
    s.add_argument("--timeout", type=float, default=3600.0)
    add_client_args(s, output=True)
    st = sub.add_parser("status", help="the progress of one or more batches (one run)")
    st.add_argument("batch_ids", nargs="+", metavar="batch_id")
    add_client_args(st, output=True)
    r = sub.add_parser("results", help="download the masks of one or more batches")
    r.add_argument("batch_ids", nargs="+", metavar="batch_id")
    r.add_argument("--out", required=True)
    add_client_args(r, output=True)
    ev = sub.add_parser("events", help="outbound events: deliveries and replays").add_subparsers(
        dest="events_command", required=True
    )
    for name, text in (
        ("deliveries", "every delivery of an event, with status codes and timings"),
        ("replay", "deliver an event again where it did not get through (--all: everywhere)"),
    ):
        e = ev.add_parser(name, help=text)
        e.add_argument("event_id")
        if name == "replay":
            e.add_argument("--all", action="store_true", help="delivered destinations too")
        add_client_args(e)
    subs = sub.add_parser("subscriptions", help="event subscriptions").add_subparsers(
        dest="subscriptions_command", required=True
    )
    sr = subs.add_parser("replay", help="deliver again what did not get through to a subscription since a time")
    sr.add_argument("sub_id")
    sr.add_argument("--since", required=True, help="RFC 3339 time or unix seconds")
    sr.add_argument("--all", action="store_true", help="delivered events too")
    add_client_args(sr)
    dv = sub.add_parser("dev", help="the sandbox and segflow on one SQLite file, up until Ctrl-C")
    dv.add_argument("--port", type=int, default=8600, help="segflow's port (0: any free port)")
    dv.add_argument("--sandbox-port", type=int, default=0, help="the sandbox's port (0: any free port)")
    dv.add_argument("--data", default=".segflow/dev", help="folder of the SQLite file and the masks")
    dv.add_argument("--faults", action="store_true", help="switch on the sandbox's faults (as the demo does)")
    d = sub.add_parser("demo", help="sandbox + segflow on a fresh SQLite file, a batch end to end")
    d.add_argument("--jobs-per-image", type=int, default=6, help="prompts per sample image (1..6)")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--no-faults", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"segflow: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_loop(main: Any) -> int:
    """Run a server or worker coroutine on uvloop (service.serving.run; imported here, so the
    client commands do not load uvicorn)."""
    from service.serving import run

    code: int = run(main)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        from service.sandbox import cli as sandbox_cli

        return sandbox_cli.run(sandbox_cli.settings_from_args(args))
    if args.command == "demo":
        from service.demo import run_demo

        return run_loop(run_demo(jobs_per_image=args.jobs_per_image, seed=args.seed, faults=not args.no_faults))
    if args.command == "dev":
        from service.dev import run_dev

        return run_loop(run_dev(port=args.port, sandbox_port=args.sandbox_port, data=args.data, faults=args.faults))
    if args.command in ("submit", "status", "results", "events", "subscriptions"):
        handler = {
            "submit": cli_client.submit,
            "status": cli_client.status,
            "results": cli_client.results,
            "events": cli_client.events,
            "subscriptions": cli_client.subscriptions_replay,
        }[args.command]
        return cli_client.run(handler, args)
    settings = _settings(args)
    _logging(settings)
    if args.command == "serve":
        from service.workers import ALL_ROLES

        return run_loop(_serve(settings, () if args.no_workers else ALL_ROLES))
    if args.command == "worker":
        return run_loop(_worker(settings, args.role))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "prune":
        return asyncio.run(_prune(settings, args.dry_run))
    return asyncio.run(_keys_create(settings, args.tenant, args.label))


if __name__ == "__main__":
    raise SystemExit(main())
