"""The `segflow` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import mimetypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

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


# submit / status / results ------------------------------------------------------------------


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("SEGFLOW_API_URL", "http://127.0.0.1:8600"),
        help="segflow base URL (SEGFLOW_API_URL)",
    )


def _api_key() -> str:
    key = os.environ.get("SEGFLOW_API_KEY")
    if not key:
        raise ConfigError("SEGFLOW_API_KEY: set it to your segflow API key")
    return key


async def _items(args: argparse.Namespace, client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if args.csv:
        with open(args.csv, newline="") as fh:
            for row in csv.DictReader(fh):
                item: dict[str, Any] = {"image": row["image"], "prompt": row["prompt"]}
                if row.get("negative_prompt"):
                    item["negative_prompt"] = row["negative_prompt"]
                if row.get("segment_factor"):
                    item["segment_factor"] = int(row["segment_factor"])
                items.append(item)
    for source in args.sources:
        url = source
        if not source.startswith(("http://", "https://")):
            path = Path(source)
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            url = await client.upload_input(path.read_bytes(), ctype)
        for prompt in args.prompt or []:
            items.append(
                {
                    "image": url,
                    "prompt": prompt,
                    "negative_prompt": args.negative_prompt,
                    "segment_factor": args.segment_factor,
                }
            )
    if not items:
        raise ConfigError("nothing to submit: give image files or URLs with --prompt, or --csv")
    return items


async def _submit(args: argparse.Namespace) -> int:
    from service.apiclient import SegflowClient
    from service.progress import counts_table, wait_for_batch

    console = Console()
    async with SegflowClient(args.url, _api_key()) as client:
        items = await _items(args, client)
        answer = await client.submit(items, callback_url=args.callback_url, idempotency_key=args.idempotency_key)
        console.print(f"batch [bold]{answer['batch_id']}[/] accepted: {len(answer['jobs'])} jobs")
        if args.wait:
            summary = await wait_for_batch(client, answer["batch_id"], console, timeout_s=args.timeout)
            console.print(counts_table(f"batch {answer['batch_id']}", summary["counts"]))
            console.print(f"spend: ${summary['spend_usd']:.2f}")
            return 0 if summary["done"] >= summary["total"] else 1
    return 0


async def _status(args: argparse.Namespace) -> int:
    from service.apiclient import SegflowClient
    from service.progress import counts_table

    console = Console()
    async with SegflowClient(args.url, _api_key()) as client:
        summary = await client.batch(args.batch_id)
    console.print(counts_table(f"batch {args.batch_id}: {summary['done']}/{summary['total']} done", summary["counts"]))
    console.print(f"spend: ${summary['spend_usd']:.2f}")
    return 0


async def _results(args: argparse.Namespace) -> int:
    """Every mask of a batch into a folder, through the manifest's signed links (so it works
    whatever backend stores the masks), each checked against its sha256; plus the manifest."""
    import orjson
    from rich.progress import track

    from service.apiclient import SegflowClient
    from service.progress import facts_table

    console = Console()
    out = Path(args.out)
    saved = missing = 0
    async with SegflowClient(args.url, _api_key()) as client:
        rows = await client.manifest(args.batch_id)
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        for row in track(rows, description="downloading masks", console=console):
            if not row["download_url"]:
                missing += 1
                continue
            await client.save_link(row["download_url"], out / f"{row['job_id']}.png", row["mask_sha256"])
            saved += 1
    console.print(
        facts_table(
            "results",
            [
                ("masks saved", str(saved)),
                ("jobs without a mask", str(missing)),
                ("folder", str(out.resolve())),
                ("manifest", str((out / "manifest.jsonl").resolve())),
            ],
        )
    )
    return 0


async def _prune(settings: Settings, dry_run: bool) -> int:
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


async def _events(args: argparse.Namespace) -> int:
    from rich.table import Table

    from service.apiclient import SegflowClient

    console = Console()
    async with SegflowClient(args.url, _api_key()) as client:
        if args.events_command == "replay":
            answer = await client.replay_event(args.event_id)
            console.print(f"event {args.event_id}: {answer['replayed']} deliveries queued again")
            return 0
        found = await client.event_deliveries(args.event_id)
    table = Table(title=f"{found['event']['type']} {args.event_id}")
    for column in ("target", "state", "attempt", "at", "status", "ms", "error"):
        table.add_column(column)
    for d in found["deliveries"]:
        for a in d["attempt_log"] or [{"n": 0, "at": "", "status": None, "duration_ms": 0, "error": None}]:
            table.add_row(
                d["target"],
                d["state"],
                str(a["n"]),
                a["at"] or "",
                str(a["status"] or "-"),
                f"{a['duration_ms']:.0f}",
                a["error"] or "",
            )
    console.print(table)
    return 0


async def _subscriptions_replay(args: argparse.Namespace) -> int:
    from service.apiclient import SegflowClient

    async with SegflowClient(args.url, _api_key()) as client:
        answer = await client.replay_subscription(args.sub_id, args.since)
    Console().print(f"subscription {args.sub_id}: {answer['replayed']} dead deliveries queued again")
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
    s.add_argument("--idempotency-key")
    s.add_argument("--wait", action="store_true", help="show progress until every job is final")
    s.add_argument("--timeout", type=float, default=3600.0)
    _client_args(s)
    st = sub.add_parser("status", help="a batch's progress")
    st.add_argument("batch_id")
    _client_args(st)
    r = sub.add_parser("results", help="download a batch's masks")
    r.add_argument("batch_id")
    r.add_argument("--out", required=True)
    _client_args(r)
    ev = sub.add_parser("events", help="outbound events: deliveries and replays").add_subparsers(
        dest="events_command", required=True
    )
    for name, text in (
        ("deliveries", "every delivery of an event, with status codes and timings"),
        ("replay", "deliver an event again to every destination"),
    ):
        e = ev.add_parser(name, help=text)
        e.add_argument("event_id")
        _client_args(e)
    subs = sub.add_parser("subscriptions", help="event subscriptions").add_subparsers(
        dest="subscriptions_command", required=True
    )
    sr = subs.add_parser("replay", help="deliver again every dead delivery of a subscription since a time")
    sr.add_argument("sub_id")
    sr.add_argument("--since", required=True, help="RFC 3339 time or unix seconds")
    _client_args(sr)
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


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "sandbox":
        from service.sandbox import cli as sandbox_cli

        return sandbox_cli.run(sandbox_cli.settings_from_args(args))
    if args.command == "demo":
        from service.demo import run_demo

        return asyncio.run(run_demo(jobs_per_image=args.jobs_per_image, seed=args.seed, faults=not args.no_faults))
    if args.command in ("submit", "status", "results", "events", "subscriptions"):
        handler = {
            "submit": _submit,
            "status": _status,
            "results": _results,
            "events": _events,
            "subscriptions": _subscriptions_replay,
        }[args.command]
        return asyncio.run(handler(args))
    settings = _settings(args)
    _logging(settings)
    if args.command == "serve":
        from service.workers import ALL_ROLES

        return asyncio.run(_serve(settings, () if args.no_workers else ALL_ROLES))
    if args.command == "worker":
        return asyncio.run(_worker(settings, args.role))
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "prune":
        return asyncio.run(_prune(settings, args.dry_run))
    return asyncio.run(_keys_create(settings, args.tenant, args.label))


if __name__ == "__main__":
    raise SystemExit(main())
