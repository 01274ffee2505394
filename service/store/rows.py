"""Rows in and out of the database, for both dialects: records decoded by column name, and a
group of transitions planned in memory as the parameters of a few `executemany` calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from service.callback_events import job_event
from service.jobs import (
    JOB_COLUMNS,
    MUTABLE_COLUMNS,
    BatchRow,
    BatchSummary,
    DecideFn,
    DeliveryRow,
    DeliveryState,
    EventRow,
    JobInput,
    JobRow,
    OutboxEvent,
    Outcome,
    SubscriptionRow,
    TaskRow,
)
from service.states import State, transition
from service.store.driver import Row

R = TypeVar("R")
_STATES = {s.value: s for s in State}
_MUTABLE = frozenset(MUTABLE_COLUMNS)


def _loads(text: str | None) -> Any:
    return orjson.loads(text) if text else None


def record(cls: type[R], row: Row) -> R:
    """A record whose fields are columns of the same names."""
    return cls(**{f: row[f] for f in cls.__dataclass_fields__})  # type: ignore[attr-defined]


def _fields(row: Row) -> dict[str, Any]:
    values = {c: row[c] for c in JOB_COLUMNS}
    values["metadata"] = _loads(values["metadata"])
    values["state"] = _STATES[values["state"]]
    values["output_urls"] = tuple(_loads(values["output_urls"]) or ())
    return values


def job(row: Row) -> JobRow:
    return JobRow(**_fields(row))


def task(row: Row) -> TaskRow:
    return record(TaskRow, row)


def event(row: Row) -> EventRow:
    return dataclasses.replace(record(EventRow, {**row, "detail": None}), detail=_loads(row["detail"]))


def subscription(row: Row) -> SubscriptionRow:
    types = tuple(orjson.loads(row["event_types"]))
    values = {**row, "event_types": types, "asymmetric": bool(row["ed25519"]), "paused": bool(row["paused"])}
    return record(SubscriptionRow, values)


def delivery(row: Row) -> DeliveryRow:
    return record(DeliveryRow, {**row, "asymmetric": bool(row["ed25519"]), "state": DeliveryState(row["state"])})


def gauge_counts(jobs: Iterable[Row], others: Row) -> Mapping[str, float]:
    """{live state: jobs} (zeros included), deliveries_pending, deliveries_dead and
    oldest_live_created_at (0 when no job is live), from `gauge_jobs` and `gauge_others`."""
    out: dict[str, float] = {s.value: 0 for s in State if not s.is_terminal}
    out.update({str(r["state"]): int(r["n"]) for r in jobs})
    out["deliveries_pending"] = int(others["deliveries_pending"] or 0)
    out["deliveries_dead"] = int(others["deliveries_dead"] or 0)
    out["oldest_live_created_at"] = float(others["oldest_live_created_at"] or 0.0)
    return out


def counts(found: Iterable[Row]) -> dict[str, tuple[dict[str, int], float]]:
    """Per batch, its jobs by state and its spend, from `batches_counts` rows."""
    out: dict[str, tuple[dict[str, int], float]] = {}
    for r in found:
        by_state, spend = out.get(r["batch_id"], ({}, 0.0))
        by_state[r["state"]] = int(r["jobs"])
        out[r["batch_id"]] = (by_state, spend + float(r["spend"]))
    return out


def summaries(batches: Sequence[BatchRow], found: Iterable[Row]) -> list[BatchSummary]:
    """Summaries of `batches` from `batches_counts` rows, in the batches' order."""
    per = counts(found)
    return [BatchSummary(b, *_rounded(per.get(b.id, ({}, 0.0)))) for b in batches]


def _rounded(c: tuple[dict[str, int], float]) -> tuple[dict[str, int], float]:
    return c[0], round(c[1], 6)


def params(obj: Any) -> tuple[Any, ...]:
    """A record's fields in declaration order: the parameters of its INSERT."""
    return dataclasses.astuple(obj)


def new_job(job_id: str, b: BatchRow, seq: int, item: JobInput, now: float) -> tuple[Any, ...]:
    metadata = orjson.dumps(dict(item.metadata)).decode() if item.metadata is not None else None
    return (job_id, b.id, b.tenant, seq, *params(item)[:4], metadata, now, item.trace_context)


def outbox(e: OutboxEvent) -> tuple[Any, ...]:
    return (e.id, e.tenant, e.type, e.batch_id, e.job_id, e.payload, e.created_at, e.trace_context)


_SLOT = {c: i for i, c in enumerate(MUTABLE_COLUMNS)}
_URLS = _SLOT["output_urls"]


@dataclass
class GroupPlan:
    """A group of transitions decided in order against the rows as the group changes them: each
    changed job is then written once, guarded by the state it had when the group read it."""

    now: float
    results: list[tuple[bool, Any]] = field(default_factory=list)
    changed: dict[str, JobRow] = field(default_factory=dict)
    updates: dict[str, list[Any]] = field(default_factory=dict)  # job id: `update_job` parameters
    entered: set[State] = field(default_factory=set)  # the states some job of the group moved into
    tasks: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    artifacts: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[OutboxEvent] = field(default_factory=list)


def plan_group(
    group: Iterable[tuple[str, DecideFn, str | None]],
    found: Iterable[Row],
    tasks: Mapping[str, TaskRow],
    now: float,
) -> GroupPlan:
    """Run each (job_id, decide, task_id) in order against the `found` job rows, each decision
    seeing what the earlier ones changed (jobs and tasks alike)."""
    gp = GroupPlan(now)
    values: dict[str, dict[str, Any]] = {}
    jobs: dict[str, JobRow] = {}
    for r in found:  # each job kept as its fields, its record, and its row as stored
        v = values[r["id"]] = _fields(r)
        jobs[v["id"]] = JobRow(**v)
        gp.updates[v["id"]] = ["", now, *(r[c] for c in MUTABLE_COLUMNS), v["id"], r["state"]]
    known = dict(tasks)
    for job_id, decide, task_id in group:
        current = jobs.get(job_id)
        try:
            change = decide(current, known.get(task_id) if task_id else None)
        except Exception as exc:  # noqa: BLE001 - the error belongs to that transition's caller
            gp.results.append((False, exc))
            continue
        to_state = None
        if current is not None and change is not None:
            to_state = current.state if change.event is None else transition(current.state, change.event)
        if current is None or change is None or to_state is None:
            gp.results.append((True, Outcome(current, current, False)))
            continue
        cols = change.set
        if not cols.keys() <= _MUTABLE:
            raise ValueError(f"not a mutable job column: {sorted(cols.keys() - _MUTABLE)}")
        moved = to_state is not current.state
        if moved and to_state.is_terminal and "finished_at" not in cols:
            cols = {**cols, "finished_at": now}
        v = values[job_id]
        v.update(cols, state=to_state, updated_at=now)
        update = gp.updates[job_id]
        for c, value in cols.items():
            update[2 + _SLOT[c]] = value
        if "output_urls" in cols:
            v["output_urls"] = tuple(cols["output_urls"])
            update[2 + _URLS] = orjson.dumps(list(cols["output_urls"])).decode()
        update[0] = to_state.value
        after = jobs[job_id] = gp.changed[job_id] = JobRow(**v)
        if (t := change.task) is not None:
            gp.tasks.append((t.task_id, job_id, t.attempt, t.origin, t.status, now, now, t.run_s, t.heard_after_s))
            known[t.task_id] = TaskRow(t.task_id, job_id, t.attempt, t.origin, t.status, now, now)
        if change.artifacts:
            gp.artifacts.extend(params(a) for a in change.artifacts)
        if moved or change.note:
            name = change.event.value if change.event is not None else str(change.note)
            detail = orjson.dumps(change.detail).decode() if change.detail else None
            gp.events.append((job_id, now, name, current.state.value, to_state.value, change.source, detail))
        if moved:
            gp.entered.add(to_state)
            if to_state.is_terminal and (e := job_event(after, change.artifacts, now)) is not None:
                gp.outbox.append(e)
        gp.results.append((True, Outcome(current, after, True)))
    for unchanged in gp.updates.keys() - gp.changed.keys():
        del gp.updates[unchanged]
    return gp
