"""The one way a role changes a job: `apply` runs the transition in the store (which, after its
commit, wakes the workers the change gives work to) and counts it in the metrics."""

from __future__ import annotations

from service.context import Services
from service.jobs import DecideFn, Outcome


async def apply(
    services: Services, job_id: str, decide: DecideFn, *, source: str, task_id: str | None = None
) -> Outcome:
    outcome = await services.store.transition(job_id, decide, task_id=task_id)
    if outcome.state_changed and outcome.after is not None:
        services.metrics.transitioned(outcome.after.state.value, source)
    return outcome
