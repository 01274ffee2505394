"""segflow's promises as checks over a finished run: the store, the artifact folder and the
sandbox's record of what it was asked to do. Used by the flow tests and the demo."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.artifacts import LocalArtifactStore
from service.states import State
from service.store.base import Store


@dataclass
class Report:
    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    masks_checked: int = 0
    duplicate_paid_tasks: int = 0
    resends_after_adoption_window: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def paid_tasks_by_job(sandbox_tasks: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Upstream tasks per job id (from the webhook endpoint), leaving out tasks that failed upstream
    (a failed task, such as a "too many requests" one, is not charged)."""
    out: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in sandbox_tasks:
        endpoint = t.get("webhook_endpoint") or ""
        if "/webhooks/qubico/" in endpoint and str(t.get("status", "")).lower() != "failed":
            out[endpoint.rsplit("/", 1)[-1]].append(t)
    return out


async def check_run(
    store: Store,
    artifacts: LocalArtifactStore,
    job_ids: Sequence[str],
    sandbox_tasks: Sequence[Mapping[str, Any]],
) -> Report:
    """Every job final exactly once; masks present with the sandbox's sha256; no double payment
    beyond re-sends after a passed adoption window."""
    report = Report(jobs=len(job_ids))
    paid = paid_tasks_by_job(sandbox_tasks)
    masks = {t["task_id"]: t.get("mask_sha256") for t in sandbox_tasks}
    for job_id in job_ids:
        job = await store.get_job(job_id)
        if job is None:
            report.violations.append(f"{job_id}: accepted but missing from the store")
            continue
        report.states[job.state.value] += 1
        events = await store.job_events(job_id)
        if not job.state.is_terminal:
            report.violations.append(f"{job_id}: not final ({job.state.value})")
        finals = [
            e for e in events if e.to_state in {s.value for s in State if s.is_terminal} and e.from_state != e.to_state
        ]
        retries = sum(1 for e in events if e.event == "retry")
        if job.state.is_terminal and len(finals) != retries + 1:
            report.violations.append(f"{job_id}: {len(finals)} terminal transitions")
        resends = sum(1 for e in events if e.event == "adoption_window_passed")
        report.resends_after_adoption_window += resends
        extra = len(paid.get(job_id, ())) - 1
        if extra > 0:
            report.duplicate_paid_tasks += extra
            if extra > resends:
                report.violations.append(f"{job_id}: {extra + 1} paid upstream tasks, {resends} re-sends")
        if job.state is State.SUCCEEDED:
            await _check_mask(store, artifacts, job_id, masks, report)
    return report


async def _check_mask(
    store: Store, artifacts: LocalArtifactStore, job_id: str, masks: Mapping[str, Any], report: Report
) -> None:
    stored = await store.job_artifacts(job_id)
    if not stored:
        report.violations.append(f"{job_id}: succeeded without a mask")
        return
    task_masks = {masks.get(t.task_id) for t in await store.job_tasks(job_id)}
    for a in stored:
        path = artifacts.resolve(a.path)
        if not path.is_file():
            report.violations.append(f"{job_id}: mask file {a.path} missing")
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != a.sha256:
            report.violations.append(f"{job_id}: mask file differs from its recorded sha256")
        if a.sha256 not in task_masks:
            report.violations.append(f"{job_id}: mask sha256 matches none of the job's upstream tasks")
        report.masks_checked += 1
