"""Rows in and out of the database, for both dialects: records decoded by column name, and a
group of transitions planned in memory as the parameters of a few `executemany` calls."""

from __future__ import annotations

import dataclasses
import operator
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
from service.spend import Key, deltas
from service.states import TERMINAL, TRANSITIONS, Event, State
from service.store.driver import Row

R = TypeVar("R")
_STATES = {s.value: s for s in State}
_VALUES = {s: s.value for s in [*State, *Event]}  # an enum's .value is a Python-level property


def _loads(text: str | None) -> Any:
    return orjson.loads(text) if text else None


def record(cls: type[R], row: Row) -> R:
    """A record whose fields are columns of the same names."""
    return cls(**{f: row[f] for f in cls.__dataclass_fields__})  # type: ignore[attr-defined]


_JOB = operator.itemgetter(*JOB_COLUMNS)  # by name, in C
_TASK = operator.itemgetter(*TaskRow.__struct_fields__)
_AT = {c: i for i, c in enumerate(JOB_COLUMNS)}
_META, _STATE, _URLS, _UPDATED = _AT["metadata"], _AT["state"], _AT["output_urls"], _AT["updated_at"]
_MUTABLE = {c: _AT[c] for c in MUTABLE_COLUMNS}  # where each column a Change may set sits in a job's values
_STORED = operator.itemgetter(*_MUTABLE.values())  # those values in `update_job`'s order
_URL_PARAM = MUTABLE_COLUMNS.index("output_urls")


def _values(row: Row) -> list[Any]:
    """A job row's fields, decoded, in JobRow's order (positional construction is the cheap one)."""
    v = list(_JOB(row))
    v[_META] = _loads(v[_META])
    v[_STATE] = _STATES[v[_STATE]]
    v[_URLS] = tuple(_loads(v[_URLS]) or ())
    return v


def job(row: Row) -> JobRow:
    return JobRow(*_values(row))


def task(row: Row) -> TaskRow:
    return TaskRow(*_TASK(row))


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


def counts(found: Iterable[Row]) -> dict[str, tuple[dict[str, int], float, float]]:
    """Per batch, its jobs by state, its settled spend and what its jobs hold reserved, from
    `batches_counts` rows."""
    out: dict[str, tuple[dict[str, int], float, float]] = {}
    for r in found:
        by_state, spend, reserved = out.get(r["batch_id"], ({}, 0.0, 0.0))
        by_state[r["state"]] = int(r["jobs"])
        out[r["batch_id"]] = (by_state, spend + float(r["spend"]), reserved + float(r["reserved"]))
    return out


def summaries(batches: Sequence[BatchRow], found: Iterable[Row]) -> list[BatchSummary]:
    """Summaries of `batches` from `batches_counts` rows, in the batches' order."""
    per = counts(found)
    return [BatchSummary(b, *_rounded(per.get(b.id, ({}, 0.0, 0.0)))) for b in batches]


def _rounded(c: tuple[dict[str, int], float, float]) -> tuple[dict[str, int], float, float]:
    return c[0], round(c[1], 6), round(c[2], 6)


def params(obj: Any) -> tuple[Any, ...]:
    """A record's fields in declaration order: the parameters of its INSERT."""
    return dataclasses.astuple(obj)


def new_job(job_id: str, b: BatchRow, seq: int, item: JobInput, now: float) -> tuple[Any, ...]:
    metadata = orjson.dumps(dict(item.metadata)).decode() if item.metadata is not None else None
    return (job_id, b.id, b.tenant, seq, *params(item)[:4], metadata, now, item.trace_context)


def outbox(e: OutboxEvent) -> tuple[Any, ...]:
    return (e.id, e.tenant, e.type, e.batch_id, e.job_id, e.payload, e.created_at, e.trace_context)


@dataclass
class GroupPlan:
    """A group of transitions decided in order against the rows as the group changes them: each
    changed job is then written once, guarded by the state it had when the group read it."""

    now: float
    results: list[tuple[bool, Any]] = field(default_factory=list)
    changed: dict[str, JobRow] = field(default_factory=dict)
    updates: list[tuple[Any, ...]] = field(default_factory=list)  # `update_job` parameters
    entered: set[State] = field(default_factory=set)  # the states some job of the group moved into
    tasks: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # task id: `upsert_task` parameters
    events: list[tuple[Any, ...]] = field(default_factory=list)
    artifacts: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[OutboxEvent] = field(default_factory=list)
    spend: dict[Key, float] = field(default_factory=dict)  # how the group moves the spend totals


def plan_group(
    group: Iterable[tuple[str, DecideFn, str | None]],
    found: Iterable[Row],
    tasks: Mapping[str, TaskRow],
    now: float,
) -> GroupPlan:
    """Run each (job_id, decide, task_id) in order against the `found` job rows, each decision
    seeing what the earlier ones changed (jobs and tasks alike)."""
    gp = GroupPlan(now)
    values: dict[str, list[Any]] = {}  # each job's fields as the group changes them
    stored: dict[str, Any] = {}  # each job's state as the group read it: what its write is guarded by
    jobs: dict[str, JobRow] = {}
    for r in found:
        v = values[r["id"]] = _values(r)
        jobs[v[0]] = JobRow(*v)
        stored[v[0]] = r["state"]
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
            to_state = current.state if change.event is None else TRANSITIONS.get((current.state, change.event))
        if current is None or change is None or to_state is None:
            gp.results.append((True, Outcome(current, current, False)))
            continue
        cols = change.set
        if not cols.keys() <= _MUTABLE.keys():
            raise ValueError(f"not a mutable job column: {sorted(cols.keys() - _MUTABLE.keys())}")
        moved = to_state is not current.state
        if moved and to_state in TERMINAL and "finished_at" not in cols:
            cols = {**cols, "finished_at": now}
        v = values[job_id]
        for c, value in cols.items():
            v[_MUTABLE[c]] = value
        if "output_urls" in cols:
            v[_URLS] = tuple(cols["output_urls"])
        v[_STATE], v[_UPDATED] = to_state, now
        after = jobs[job_id] = gp.changed[job_id] = JobRow(*v)
        for k, usd in deltas(current, after, now):
            gp.spend[k] = gp.spend.get(k, 0.0) + usd
        if (t := change.task) is not None:
            row = (t.task_id, job_id, t.attempt, t.origin, t.status, now, now, t.run_s, t.heard_after_s)
            if (was := gp.tasks.get(t.task_id)) is not None:  # written once, as both upserts in turn would
                row = (*was[:4], *row[4:7], *(r if w is None else w for w, r in zip(was[7:], row[7:], strict=True)))
            gp.tasks[t.task_id] = row
            known[t.task_id] = TaskRow(t.task_id, job_id, t.attempt, t.origin, t.status, now, now)
        if change.artifacts:
            gp.artifacts.extend(params(a) for a in change.artifacts)
        if moved or change.note:
            name = _VALUES[change.event] if change.event is not None else str(change.note)
            detail = orjson.dumps(change.detail).decode() if change.detail else None
            gp.events.append((job_id, now, name, _VALUES[current.state], _VALUES[to_state], change.source, detail))
        if moved:
            gp.entered.add(to_state)
            if to_state in TERMINAL and (e := job_event(after, change.artifacts, now)) is not None:
                gp.outbox.append(e)
        gp.results.append((True, Outcome(current, after, True)))
    for job_id, v in values.items():  # each changed job written once, whole, in the order read
        if job_id in gp.changed:
            update = [_VALUES[v[_STATE]], now, *_STORED(v), job_id, stored[job_id]]
            update[2 + _URL_PARAM] = orjson.dumps(list(v[_URLS])).decode()
            gp.updates.append(tuple(update))
    return gp
