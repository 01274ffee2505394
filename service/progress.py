"""Terminal output for the CLI's long commands: a progress bar over a batch, and summary tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import AsyncClient
from service.client.types import BatchSummary
from service.states import State

STATE_ORDER = tuple(s.value for s in State)  # the life of a job, first to last


async def wait_for_batches(
    client: AsyncClient,
    batch_ids: Sequence[str],
    console: Console,
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    quiet: bool = False,
) -> tuple[list[BatchSummary], bool]:
    """Poll the batches (one run) until every job is final or the timeout passes, drawing one
    progress bar unless `quiet`; (their last summaries, whether every job is final)."""
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=quiet) as bar:
        summaries = [await client.get_batch(b) for b in batch_ids]
        task = bar.add_task("jobs done", total=sum(s["total"] for s in summaries), states="")
        while True:
            counts: dict[str, int] = {}
            for s in summaries:
                for state, n in s["counts"].items():
                    counts[state] = counts.get(state, 0) + n
            live = " ".join(f"{s}:{counts[s]}" for s in STATE_ORDER if counts.get(s))
            done = sum(s["done"] for s in summaries)
            bar.update(task, completed=done, states=live)
            finished = all(s["done"] >= s["total"] for s in summaries)
            if finished or time.monotonic() > deadline:
                return summaries, finished
            await asyncio.sleep(interval_s)
            summaries = [await client.get_batch(b) for b in batch_ids]


async def wait_for_batch(
    client: AsyncClient, batch_id: str, console: Console, *, timeout_s: float, interval_s: float = 0.5
) -> BatchSummary:
    """One batch's last summary, after waiting as wait_for_batches does."""
    summaries, _ = await wait_for_batches(client, [batch_id], console, timeout_s=timeout_s, interval_s=interval_s)
    return summaries[0]


def counts_table(title: str, counts: Mapping[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("jobs", justify="right")
    for state in STATE_ORDER:
        if counts.get(state):
            table.add_row(state, str(counts[state]))
    return table


def facts_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in rows:
        table.add_row(what, value)
    return table
