"""Terminal output for the CLI's long commands: a progress bar over a batch, and summary tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.apiclient import SegflowClient
from service.states import State

STATE_ORDER = tuple(s.value for s in State)  # the life of a job, first to last


async def wait_for_batch(
    client: SegflowClient, batch_id: str, console: Console, *, timeout_s: float, interval_s: float = 0.5
) -> Mapping[str, Any]:
    """Poll the batch until every job is final (or the timeout passes), drawing a progress bar."""
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        summary = await client.batch(batch_id)
        task = bar.add_task("jobs done", total=summary["total"], states="")
        while True:
            counts = summary["counts"]
            live = " ".join(f"{s}:{counts[s]}" for s in STATE_ORDER if counts.get(s))
            bar.update(task, completed=summary["done"], states=live)
            if summary["done"] >= summary["total"] or time.monotonic() > deadline:
                return dict(summary)
            await asyncio.sleep(interval_s)
            summary = await client.batch(batch_id)


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
