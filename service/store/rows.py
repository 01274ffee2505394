"""Rows in and out of the database, shared by both stores: decoding, and turning a `Change` into the
parameters of one compare-and-set."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.callback_events import OutboxEvent, job_event
from service.states import State, transition
from service.store.base import (
    JOB_COLUMNS,
    MUTABLE_COLUMNS,
    ArtifactRow,
    BatchRow,
    BatchSummary,
    Change,
    EventRow,
    JobInput,
    JobRow,
    Outcome,
    TaskRow,
)

__all__ = ["JOB_COLUMNS", "Plan", "batch", "job", "plan", "sql_states"]


def sql_states(states: frozenset[State]) -> str:
    """States as an SQL list in the state machine's order: the same text every run, so a query
    matches its partial index's WHERE (SQLite uses a partial index only for a matching condition)."""
    return ", ".join(f"'{s.value}'" for s in State if s in states)


_STATES = {s.value: s for s in State}


def job(row: Iterable[Any]) -> JobRow:
    values = list(row)
    values[8] = orjson.loads(values[8]) if values[8] else None  # metadata
    values[9] = _STATES[values[9]]  # state
    values[21] = tuple(orjson.loads(values[21])) if values[21] else ()  # output_urls
    return JobRow(*values)


def batch(row: Iterable[Any]) -> BatchRow:
    return BatchRow(*row)


def batch_summaries(batches: Sequence[BatchRow], counts: Iterable[Iterable[Any]]) -> list[BatchSummary]:
    """Summaries of `batches` from (batch_id, state, jobs, spend) rows, in the batches' order."""
    found: dict[str, dict[str, int]] = {b.id: {} for b in batches}
    spend: dict[str, float] = dict.fromkeys(found, 0.0)
    for batch_id, state, n, price in counts:
        found[batch_id][state] = int(n)
        spend[batch_id] += float(price)
    return [BatchSummary(b, found[b.id], round(spend[b.id], 6)) for b in batches]


def batch_params(b: BatchRow) -> tuple[Any, ...]:
    return (b.id, b.tenant, b.callback_url, b.idempotency_key, b.request_hash, b.total, b.created_at)


def new_job_params(job_id: str, b: BatchRow, seq: int, item: JobInput, now: float) -> tuple[Any, ...]:
    metadata = orjson.dumps(dict(item.metadata)).decode() if item.metadata is not None else None
    return (
        job_id,
        b.id,
        b.tenant,
        seq,
        item.image,
        item.prompt,
        item.negative_prompt,
        item.segment_factor,
        metadata,
        now,
        now,
        item.trace_context,
    )


def task(row: Iterable[Any]) -> TaskRow:
    return TaskRow(*row)


def event(row: Iterable[Any]) -> EventRow:
    values = list(row)
    values[7] = orjson.loads(values[7]) if values[7] else None
    return EventRow(*values)


def artifact(row: Iterable[Any]) -> ArtifactRow:
    return ArtifactRow(*row)


def outbox_params(e: OutboxEvent) -> tuple[Any, ...]:
    return (e.id, e.tenant, e.type, e.batch_id, e.job_id, e.payload, e.created_at, e.trace_context)


def flow_counts(row: Iterable[Any]) -> Mapping[str, int]:
    by_webhook, by_poll, adopted, tasks, jobs_with_tasks, ambiguous = (int(v or 0) for v in row)
    return {
        "completed_by_webhook": by_webhook,
        "completed_by_poll": by_poll,
        "tasks_adopted": adopted,
        "tasks_created": tasks,
        "duplicate_tasks": tasks - jobs_with_tasks,
        "ambiguous_creates": ambiguous,
    }


def gauge_counts(jobs: Iterable[Iterable[Any]], others: Iterable[Any]) -> Mapping[str, float]:
    """{live state: jobs} (zeros included), deliveries_pending, deliveries_dead, and
    oldest_live_created_at (0 when no job is live)."""
    out: dict[str, float] = {s.value: 0 for s in State if not s.is_terminal}
    out.update({str(state): int(n) for state, n in jobs})
    pending, dead, oldest = others
    return {
        **out,
        "deliveries_pending": int(pending or 0),
        "deliveries_dead": int(dead or 0),
        "oldest_live_created_at": float(oldest or 0.0),
    }


@dataclass(frozen=True, slots=True)
class Plan:
    """One job's compare-and-set, ready for a driver: SQL is `UPDATE jobs SET state, updated_at,
    <columns> WHERE id AND state`, parameters in that order."""

    columns: tuple[str, ...]
    update_params: tuple[Any, ...]
    task_params: tuple[Any, ...] | None
    artifact_params: list[tuple[Any, ...]]
    event_params: tuple[Any, ...] | None
    after: JobRow
    outbox: OutboxEvent | None


def plan(current: JobRow, change: Change, now: float) -> Plan | None:
    """The writes that apply `change` to `current`, or None when its event does not apply."""
    to_state = current.state if change.event is None else transition(current.state, change.event)
    if to_state is None:
        return None
    cols = dict(change.set)
    unknown = set(cols) - MUTABLE_COLUMNS
    if unknown:
        raise ValueError(f"not a mutable job column: {sorted(unknown)}")
    if to_state.is_terminal and to_state != current.state:
        cols.setdefault("finished_at", now)
        cols.setdefault("lease_owner", None)
        cols.setdefault("lease_until", None)
        cols.setdefault("next_check_at", None)
    columns = tuple(sorted(cols))
    encoded = [_encode(c, cols[c]) for c in columns]
    update_params = (to_state.value, now, *encoded, current.id, current.state.value)
    task_params = None
    if change.task is not None:
        t = change.task
        task_params = (t.task_id, current.id, t.attempt, t.origin, t.status, now, now)
    artifact_params = [
        (
            a.job_id,
            a.idx,
            a.sha256,
            a.bytes,
            a.width,
            a.height,
            a.path,
            a.source_url,
            a.content_type,
            a.created_at,
        )
        for a in change.artifacts
    ]
    event_params = None
    if to_state != current.state or change.note:
        name = change.event.value if change.event is not None else str(change.note)
        detail = orjson.dumps(dict(change.detail)).decode() if change.detail else None
        event_params = (current.id, now, name, current.state.value, to_state.value, change.source, detail)
    typed: dict[str, Any] = {c: (tuple(v) if c == "output_urls" else v) for c, v in cols.items()}
    after = dataclasses.replace(current, state=to_state, updated_at=now, **typed)
    outbox = job_event(after, change.artifacts, now) if to_state != current.state else None
    return Plan(columns, update_params, task_params, artifact_params, event_params, after, outbox)


def _encode(column: str, value: Any) -> Any:
    if column == "output_urls":
        return orjson.dumps(list(value)).decode()
    return value


@dataclass
class GroupPlan:
    """A group of transitions decided in order against the rows as the group changes them: each
    changed job is then written once (guarded by the state it had when the group read it)."""

    results: list[tuple[bool, Any]]
    changed: dict[str, JobRow]
    read_states: dict[str, State]
    task_params: list[tuple[Any, ...]]
    event_params: list[tuple[Any, ...]]
    artifact_params: list[tuple[Any, ...]]
    outbox: list[OutboxEvent]

    def job_rows(self, mutable: tuple[str, ...]) -> list[tuple[Any, ...]]:
        """Parameters of `UPDATE jobs SET state, updated_at, <mutable…> WHERE id AND state`."""
        out = []
        for job_id, job in self.changed.items():
            values = [_encode(c, getattr(job, c)) for c in mutable]
            out.append((job.state.value, job.updated_at, *values, job_id, self.read_states[job_id].value))
        return out


def plan_group(
    group: Sequence[tuple[str, Any, str | None]],
    jobs: dict[str, JobRow],
    tasks: dict[str, TaskRow],
    now: float,
) -> GroupPlan:
    """Run each (job_id, decide, task_id) in order; `jobs` and `tasks` hold the rows read for the
    group and are updated in place as decisions apply."""
    gp = GroupPlan([], {}, {i: j.state for i, j in jobs.items()}, [], [], [], [])
    for job_id, decide, task_id in group:
        job = jobs.get(job_id)
        try:
            change = decide(job, tasks.get(task_id) if task_id else None)
        except Exception as exc:  # noqa: BLE001 - the error belongs to that transition's caller
            gp.results.append((False, exc))
            continue
        p = plan(job, change, now) if job is not None and change is not None else None
        if job is None or p is None:
            gp.results.append((True, Outcome(job, job, False)))
            continue
        jobs[job_id] = gp.changed[job_id] = p.after
        if p.task_params:
            t = p.task_params
            gp.task_params.append(t)
            tasks[t[0]] = TaskRow(t[0], t[1], t[2], t[3], t[4], t[5], t[6])
        gp.artifact_params.extend(p.artifact_params)
        if p.event_params:
            gp.event_params.append(p.event_params)
        if p.outbox is not None:
            gp.outbox.append(p.outbox)
        gp.results.append((True, Outcome(job, p.after, True)))
    return gp
