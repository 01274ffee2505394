"""segflow's promises as checks over a finished run: the store, the artifact folder and the
sandbox's record of what it was asked to do and which webhooks segflow acknowledged. Used by the
flow tests, the demo and the chaos runner."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.artifacts import ArtifactBackend, ArtifactMissing
from service.jobs import EventRow
from service.states import Event, State, transition
from service.store import Store
from service.webhook_secrets import job_of_endpoint

ACK_SKEW_S = 0.05
"""Clock slack when comparing a recorded decision with the sandbox's acknowledgement time (one machine)."""
_TERMINAL_UPSTREAM = ("completed", "failed", "cancelled", "canceled")
_UNBILLED_UPSTREAM = ("failed", "cancelled", "canceled")


@dataclass
class Report:
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    masks_checked: int = 0
    acked_completions: int = 0
    duplicate_paid_tasks: int = 0
    resends_after_adoption_window: int = 0
    resends_after_history: int = 0
    adopted_from_history: int = 0
    claims_lapsed: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def paid_tasks_by_job(sandbox_tasks: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Upstream tasks per job id (from the webhook endpoint), leaving out tasks that failed or were
    cancelled upstream (neither is charged: a "too many requests" failure, a cancel while pending)."""
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in sandbox_tasks:
        endpoint = t.get("webhook_endpoint") or ""
        job_id = job_of_endpoint(endpoint)
        if job_id and str(t.get("status", "")).lower() not in _UNBILLED_UPSTREAM:
            out[job_id].append(t)
    return out


async def check_run(
    store: Store,
    artifacts: ArtifactBackend,
    job_ids: Sequence[str],
    sandbox_tasks: Sequence[Mapping[str, Any]],
) -> Report:
    """Every job final exactly once; masks present with the sandbox's sha256; no double payment
    beyond re-sends after a passed adoption window (a re-send the history allowed, or an adoption
    from it, never pays twice); a job goes `unknown` only when its create was sent."""
    report = Report(jobs=len(job_ids))
    paid = paid_tasks_by_job(sandbox_tasks)
    masks = {t["task_id"]: tuple(t.get("mask_sha256s") or [t.get("mask_sha256")]) for t in sandbox_tasks}
    acked = _acked_completions(sandbox_tasks)
    for job_id in job_ids:
        job = await store.get_job(job_id)
        if job is None:
            report.violations.append(f"{job_id}: accepted but missing from the store")
            continue
        report.states[job.state.value] += 1
        events = await store.job_events(job_id)
        _check_event_log(job_id, job.state, events, report)
        known = {t.task_id for t in await store.job_tasks(job_id)}
        for task_id, acked_at in acked.get(job_id, {}).items():
            _check_acked(job_id, task_id, acked_at, known, events, report)
        if not job.state.is_terminal:
            report.violations.append(f"{job_id}: not final ({job.state.value})")
        finals = [
            e for e in events if e.to_state in {s.value for s in State if s.is_terminal} and e.from_state != e.to_state
        ]
        retries = sum(1 for e in events if e.event == "retry")
        if job.state.is_terminal and len(finals) != retries + 1:
            report.violations.append(f"{job_id}: {len(finals)} terminal transitions")
        # Only the blind window may pay twice: the history said no task exists before a re-send.
        passed = [e for e in events if e.event == "adoption_window_passed"]
        resends = sum(1 for e in passed if (e.detail or {}).get("via") != "history")
        report.resends_after_adoption_window += resends
        report.resends_after_history += len(passed) - resends
        report.adopted_from_history += sum(1 for e in events if e.source == "history" and e.from_state == "unknown")
        report.claims_lapsed += sum(1 for e in events if e.event == "claim_lapsed")
        for e in events:
            if e.event == "lease_expired" and not (e.detail or {}).get("sent_at"):
                report.violations.append(f"{job_id}: unknown after a lapsed lease, yet its create was never sent")
        extra = len(paid.get(job_id, ())) - 1
        if extra > 0:
            report.duplicate_paid_tasks += extra
            if extra > resends:
                report.violations.append(f"{job_id}: {extra + 1} paid upstream tasks, {resends} re-sends")
        if job.state is State.SUCCEEDED:
            await _check_mask(store, artifacts, job_id, masks, report)
    return report


def _acked_completions(sandbox_tasks: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """job id -> task id -> when segflow first answered 2xx to that task's terminal webhook."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for t in sandbox_tasks:
        endpoint = t.get("webhook_endpoint") or ""
        times = [a["at"] for a in t.get("webhooks_acked", ()) if str(a["status"]).lower() in _TERMINAL_UPSTREAM]
        job_id = job_of_endpoint(endpoint)
        if job_id and times:
            out[job_id][t["task_id"]] = min(times)
    return out


def _check_acked(
    job_id: str, task_id: str, acked_at: float, known: set[str], events: Sequence[EventRow], report: Report
) -> None:
    """A 2xx to a terminal webhook promised the fact was durable: the store knows the task, and any
    recorded outcome of it was decided before the answer, not learned again later (by a poll or a
    re-sent webhook) because the first was lost."""
    report.acked_completions += 1
    if task_id not in known:
        report.violations.append(f"{job_id}: webhook of task {task_id} acknowledged but the task is not stored")
        return
    outcome = [
        e
        for e in events
        if e.detail
        and e.detail.get("task_id") == task_id
        and str(e.detail.get("status", "")).lower() in _TERMINAL_UPSTREAM
    ]
    if outcome and outcome[0].at > acked_at + ACK_SKEW_S:
        late = outcome[0].at - acked_at
        report.violations.append(
            f"{job_id}: task {task_id} outcome acknowledged, yet recorded {late:.3f} s later (by {outcome[0].source})"
        )


def _check_event_log(job_id: str, state: State, events: Sequence[EventRow], report: Report) -> None:
    """The event log replays to the job's state: each entry starts where the last ended, and every
    change of state is one the state machine allows."""
    current = ""  # the first entry ("accepted") starts from nothing
    for e in events:
        if e.from_state != current:
            report.violations.append(f"{job_id}: event {e.id} ({e.event}) starts in {e.from_state}, not {current}")
            return
        moved = e.to_state != e.from_state and e.event in Event.__members__.values()
        if moved and transition(State(e.from_state), Event(e.event)) != State(e.to_state):
            report.violations.append(f"{job_id}: event {e.id} {e.from_state} -{e.event}-> {e.to_state} not allowed")
            return
        current = e.to_state
    if current != state.value:
        report.violations.append(f"{job_id}: event log ends in {current}, the job is {state.value}")


async def _check_mask(
    store: Store,
    artifacts: ArtifactBackend,
    job_id: str,
    masks: Mapping[str, tuple[str | None, ...]],
    report: Report,
) -> None:
    """Every mask of the job's task stored, in the upstream's order, each matching its bytes."""
    stored = await store.job_artifacts(job_id)
    if not stored:
        report.violations.append(f"{job_id}: succeeded without a mask")
        return
    tasks = await store.job_tasks(job_id)
    task_masks = {sha for t in tasks for sha in masks.get(t.task_id, ())}
    in_order = tuple(a.sha256 for a in sorted(stored, key=lambda a: a.idx))
    if tasks and not any(masks.get(t.task_id) == in_order for t in tasks):
        report.violations.append(f"{job_id}: its {len(stored)} stored masks are not all of one task's, in order")
    for a in stored:
        try:
            opened = await artifacts.open(a.path)
        except ArtifactMissing:
            report.violations.append(f"{job_id}: mask file {a.path} missing")
            continue
        digest = hashlib.sha256(b"".join([c async for c in opened.chunks])).hexdigest()
        if digest != a.sha256:
            report.violations.append(f"{job_id}: mask file differs from its recorded sha256")
        if a.sha256 not in task_masks:
            report.violations.append(f"{job_id}: mask sha256 matches none of the job's upstream tasks")
        report.masks_checked += 1


async def check_outbox(store: Store, tenant: str, job_ids: Sequence[str], report: Report) -> None:
    """Each final job has exactly one outbound `job.*` event, and it names the job's final state."""
    events = await store.list_events(tenant, since=0.0, limit=4 * len(job_ids) + 100)
    by_job: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e.job_id is not None:
            by_job[e.job_id].append(e.type)
    for job_id in job_ids:
        job = await store.get_job(job_id)
        if job is None or not job.state.is_terminal:
            continue
        if by_job.get(job_id) != [f"job.{job.state.value}"]:
            report.violations.append(f"{job_id}: outbound events {by_job.get(job_id)} for a {job.state.value} job")
