"""The CLI's client commands (submit, status, results, events, subscriptions), for people and
scripts alike: `--output json` prints one JSON document on stdout, errors are one line on stderr,
and the exit code says what happened.

Exit codes:
  0  done: accepted (and, with --wait, every job succeeded); every mask saved
  1  some jobs ended without a mask (failed, cancelled or expired)
  2  bad usage or input: arguments, configuration, CSV rows (named by line number)
  3  segflow refused the request (its HTTP status and error code are printed)
  4  segflow could not be reached
  5  --wait gave up (timeout) before every job was final
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import mimetypes
import os
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from service.client import ApiError, AsyncClient, ConnectionFailed
from service.settings import ConfigError

OK, JOBS_FAILED, USAGE, REFUSED, UNREACHABLE, TIMED_OUT = 0, 1, 2, 3, 4, 5
WITHOUT_MASK = ("failed", "cancelled", "expired")
DEFAULT_BATCH_SIZE = 1000  # the server's default max_batch_items


class InputError(Exception):
    """Bad input from the user (a CSV row, a file): exit 2 with these lines."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = list(lines)


@dataclass(frozen=True)
class Item:
    body: dict[str, Any]
    line: int | None  # the CSV line it came from


def add_client_args(p: argparse.ArgumentParser, *, output: bool = False) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("SEGFLOW_API_URL", "http://127.0.0.1:8600"),
        help="segflow base URL (SEGFLOW_API_URL)",
    )
    if output:
        p.add_argument("--output", choices=("text", "json"), default="text", help="json: one document on stdout")


def _api_key() -> str:
    key = os.environ.get("SEGFLOW_API_KEY")
    if not key:
        raise ConfigError("SEGFLOW_API_KEY: set it to your segflow API key")
    return key


def run(handler: Any, args: argparse.Namespace) -> int:
    """Run a client command, turning every expected failure into one line and an exit code."""
    import asyncio

    try:
        code: int = asyncio.run(handler(args))
        return code
    except InputError as exc:
        for line in exc.lines:
            print(f"segflow: {line}", file=sys.stderr)
        return USAGE
    except ApiError as exc:
        detail = "; ".join(f"{d.get('path')}: {d.get('reason')}" for d in exc.detail[:10])
        rid = f" (request {exc.request_id})" if exc.request_id else ""
        print(
            f"segflow: refused: {exc.status} {exc.code}: {exc.message}{rid}" + (f": {detail}" if detail else ""),
            file=sys.stderr,
        )
        return REFUSED
    except ConnectionFailed as exc:
        print(f"segflow: {exc}", file=sys.stderr)
        return UNREACHABLE


def _emit(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


# submit -------------------------------------------------------------------------------------


def read_csv(path: str) -> list[Item]:
    """Items from a CSV with columns image,prompt[,negative_prompt,segment_factor]; every bad row
    is reported by its line number (the header is line 1)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return _csv_items(path, csv.DictReader(fh))
    except OSError as exc:
        raise InputError([f"cannot read {path}: {exc.strerror}"]) from None


def _csv_items(path: str, reader: csv.DictReader[str]) -> list[Item]:
    problems: list[str] = []
    items: list[Item] = []
    try:
        missing = {"image", "prompt"} - set(reader.fieldnames or ())
        if missing:
            raise InputError([f"{path}: line 1: the header lacks {', '.join(sorted(missing))}"])
        for row in reader:
            item, bad = _csv_row(row)
            if bad:
                problems.append(f"{path}: line {reader.line_num}: " + ", ".join(bad))
            else:
                items.append(Item(item, reader.line_num))
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(f"{path}: line {reader.line_num}: {exc}")
    if problems:
        more = [f"... and {len(problems) - 20} more bad rows"] if len(problems) > 20 else []
        raise InputError(problems[:20] + more)
    return items


def _csv_row(row: dict[str | Any, str | Any]) -> tuple[dict[str, Any], list[str]]:
    """One row as a batch item, and what is wrong with it."""
    image, prompt = (row.get("image") or "").strip(), (row.get("prompt") or "").strip()
    bad = [f"no {name}" for name, value in (("image", image), ("prompt", prompt)) if not value]
    if None in row:
        bad.append("more fields than the header")
    item: dict[str, Any] = {"image": image, "prompt": prompt}
    if row.get("negative_prompt"):
        item["negative_prompt"] = row["negative_prompt"]
    factor = (row.get("segment_factor") or "").strip()
    if factor and re.fullmatch(r"[+-]?\d+", factor):
        item["segment_factor"] = int(factor)
    elif factor:
        bad.append(f"segment_factor {factor!r} is not an integer")
    return item, bad


async def _items(args: argparse.Namespace, client: AsyncClient) -> list[Item]:
    items = read_csv(args.csv) if args.csv else []
    for source in args.sources:
        url = source
        if not source.startswith(("http://", "https://")):
            path = Path(source)
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InputError([f"cannot read {source}: {exc.strerror}"]) from None
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            url = (await client.upload_input(data, ctype))["url"]
        for prompt in args.prompt or []:
            body = {
                "image": url,
                "prompt": prompt,
                "negative_prompt": args.negative_prompt,
                "segment_factor": args.segment_factor,
            }
            items.append(Item(body, None))
    if not items:
        raise InputError(["nothing to submit: give image files or URLs with --prompt, or --csv"])
    return items


def _chunk_keys(base: str | None, chunks: list[list[Item]]) -> list[str | None]:
    """One Idempotency-Key per chunk: `<key>-<n>of<total>` from --idempotency-key, so running the
    same command again never submits (or pays for) a chunk twice; else the client makes one each."""
    if base is None:
        return [None] * len(chunks)
    return [f"{base}-{i + 1}of{len(chunks)}" for i in range(len(chunks))]


def _with_lines(exc: ApiError, chunk: list[Item]) -> ApiError:
    """A 422 about `items[i]` names the CSV line instead."""
    renamed = []
    for d in exc.detail:
        m = re.match(r"items\[(\d+)\](.*)", str(d.get("path", "")))
        if m and int(m.group(1)) < len(chunk) and chunk[int(m.group(1))].line is not None:
            d = {**d, "path": f"line {chunk[int(m.group(1))].line}{m.group(2)}"}
        renamed.append(d)
    exc.detail = renamed
    return exc


async def submit(args: argparse.Namespace) -> int:
    from service.progress import counts_table, wait_for_batches

    console = Console(stderr=args.output == "json")
    size = args.batch_size
    if size < 1:
        raise InputError(["--batch-size: at least 1"])
    async with AsyncClient(args.url, _api_key()) as client:
        items = await _items(args, client)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        batches: list[dict[str, Any]] = []
        for chunk, key in zip(chunks, _chunk_keys(args.idempotency_key, chunks), strict=True):
            try:
                answer = await client.create_batch(
                    [i.body for i in chunk], callback_url=args.callback_url, idempotency_key=key
                )
            except ApiError as exc:
                if batches:  # say what was accepted before the refusal, so a rerun can resume
                    done = ", ".join(b["batch_id"] for b in batches)
                    print(f"segflow: accepted before the refusal: {done}", file=sys.stderr)
                raise _with_lines(exc, chunk) from None
            batches.append({"batch_id": answer["batch_id"], "jobs": len(answer["jobs"])})
            if args.output == "text":
                console.print(f"batch [bold]{answer['batch_id']}[/] accepted: {len(answer['jobs'])} jobs")
        report: dict[str, Any] = {"batches": batches, "total": len(items)}
        code = OK
        if args.wait:
            ids = [b["batch_id"] for b in batches]
            summaries, finished = await wait_for_batches(
                client, ids, console, timeout_s=args.timeout, quiet=args.output == "json"
            )
            report |= _run_summary(summaries)
            report["timed_out"] = not finished
            code = TIMED_OUT if not finished else (JOBS_FAILED if report["without_mask"] else OK)
            if args.output == "text":
                console.print(counts_table(f"{len(ids)} batch(es), {len(items)} jobs", report["counts"]))
                console.print(f"spend: ${report['spend_usd']:.2f}")
    if args.output == "json":
        _emit(report)
    return code


def _run_summary(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for s in summaries:
        counts.update(s["counts"])
    return {
        "counts": dict(counts),
        "done": sum(s["done"] for s in summaries),
        "spend_usd": round(sum(s["spend_usd"] for s in summaries), 6),
        "without_mask": sum(counts.get(state, 0) for state in WITHOUT_MASK),
    }


# status / results ---------------------------------------------------------------------------


async def status(args: argparse.Namespace) -> int:
    from service.progress import counts_table

    async with AsyncClient(args.url, _api_key()) as client:
        summaries = [await client.get_batch(b) for b in args.batch_ids]
    report: dict[str, Any] = _run_summary(summaries)
    report |= {"total": sum(s["total"] for s in summaries), "batches": summaries}
    if args.output == "json":
        _emit(report)
    else:
        console = Console()
        title = f"{' '.join(args.batch_ids)}: {report['done']}/{report['total']} done"
        console.print(counts_table(title if len(args.batch_ids) > 1 else f"batch {title}", report["counts"]))
        console.print(f"spend: ${report['spend_usd']:.2f}")
    return JOBS_FAILED if report["without_mask"] else OK


async def results(args: argparse.Namespace) -> int:
    """Download every succeeded job's mask into `--out`, checked against the sha256 the batch's
    manifest records, and save the manifest (with each mask's signed download link) beside them."""
    from rich.progress import track

    from service.progress import facts_table

    json_out = args.output == "json"
    console = Console(stderr=json_out)
    out = Path(args.out)
    saved: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    async with AsyncClient(args.url, _api_key()) as client:
        manifest = [await client.get_batch_manifest(b) for b in args.batch_ids]
        rows = [json.loads(line) for part in manifest for line in part.splitlines() if line.strip()]
        for row in track(rows, description="downloading masks", console=console, disable=json_out):
            if row["state"] != "succeeded" or not row["mask_sha256"]:
                missing.append({"job_id": row["job_id"], "state": row["state"], "error_code": row["error_code"]})
                continue
            data = await client.get_job_mask(row["job_id"])
            digest = hashlib.sha256(data).hexdigest()
            if digest != row["mask_sha256"]:
                missing.append({"job_id": row["job_id"], "state": row["state"], "error_code": "sha256_mismatch"})
                continue
            target = out / f"{row['job_id']}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            saved.append(
                {
                    "job_id": row["job_id"],
                    "file": str(target.resolve()),
                    "bytes": len(data),
                    "sha256": digest,
                    "download_url": row["download_url"],
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if json_out:
        _emit({"folder": str(out.resolve()), "saved": saved, "without_mask": missing})
    else:
        facts = [
            ("masks saved", str(len(saved))),
            ("jobs without a mask", str(len(missing))),
            ("folder", str(out.resolve())),
            ("manifest", "manifest.jsonl (signed download links, no API key needed, until they expire)"),
        ]
        console.print(facts_table("results", facts))
    return JOBS_FAILED if missing else OK


# events / subscriptions ---------------------------------------------------------------------


async def events(args: argparse.Namespace) -> int:
    from rich.table import Table

    console = Console()
    async with AsyncClient(args.url, _api_key()) as client:
        if args.events_command == "replay":
            answer = await client.replay_event(args.event_id, everything=args.all)
            console.print(f"event {args.event_id}: {answer['replayed']} deliveries queued again")
            return OK
        found = await client.event_deliveries(args.event_id)
    table = Table(title=f"{found['event']['type']} {args.event_id}")
    for column in ("target", "state", "attempt", "at", "status", "ms", "error"):
        table.add_column(column)
    for d in found["deliveries"]:
        for a in d.get("attempt_log") or [{"n": 0, "at": "", "status": None, "duration_ms": 0, "error": None}]:
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
    return OK


async def subscriptions_replay(args: argparse.Namespace) -> int:
    async with AsyncClient(args.url, _api_key()) as client:
        answer = await client.replay_subscription(args.sub_id, since=args.since, everything=args.all)
    Console().print(f"subscription {args.sub_id}: {answer['replayed']} deliveries queued again")
    return OK
