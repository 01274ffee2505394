"""Cancel and retry as pure decisions over a job, and the best-effort upstream cancel."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from service.job_actions import cancel, cancel_upstream, owned_by, retry
from service.jobs import JobRow
from service.states import Event, State
from service.upstream.client import CancelAnswer
from service.upstream.errors import UpstreamError
from service.webhook_secrets import MAX_ATTEMPTS_VERIFIED
from tests.fixtures.rows import job_row


def job(state: State, **fields: Any) -> JobRow:
    return job_row(state, **{"id": "j1", "batch_id": "b1", "prompt": "cat", **fields})


@pytest.mark.parametrize("state", [State.QUEUED, State.SUBMITTING, State.UNKNOWN, State.SUBMITTED])
def test_live_jobs_not_yet_fetching_can_be_cancelled(state: State) -> None:
    change = cancel(job(state, task_id="t1"), None)
    assert change is not None and (change.event, change.source) == (Event.CANCEL, "api")


@pytest.mark.parametrize("state", [State.FETCHING, State.SUCCEEDED, State.FAILED, State.CANCELLED, State.EXPIRED])
def test_fetching_and_ended_jobs_cannot_be_cancelled(state: State) -> None:
    assert cancel(job(state), None) is None


def test_retry_starts_a_clean_next_attempt() -> None:
    change = retry(123.0)(
        job(State.FAILED, attempt=2, task_id="t", error_code="x", output_urls=("u",), finished_at=9.0), None
    )
    assert change is not None and change.event is Event.RETRY
    assert change.set["attempt"] == 3 and change.set["not_before"] == 123.0
    assert {k: change.set[k] for k in ("task_id", "error_code", "finished_at", "lease_owner")} == dict.fromkeys(
        ("task_id", "error_code", "finished_at", "lease_owner")
    )
    assert change.set["output_urls"] == () and change.set["submit_tries"] == 0


def test_retry_applies_to_failed_jobs_within_the_verifiable_attempts_only() -> None:
    assert retry(0.0)(job(State.CANCELLED), None) is None
    assert retry(0.0)(job(State.FAILED, attempt=MAX_ATTEMPTS_VERIFIED - 1), None) is not None
    assert retry(0.0)(job(State.FAILED, attempt=MAX_ATTEMPTS_VERIFIED), None) is None


def test_other_tenants_jobs_are_left_alone() -> None:
    assert owned_by("globex", cancel)(job(State.QUEUED), None) is None
    assert owned_by("acme", cancel)(job(State.QUEUED), None) is not None
    assert owned_by("acme", cancel)(None, None) is None


class _Upstream:
    def __init__(self, error: UpstreamError | None) -> None:
        self.error = error
        self.cancelled: list[str] = []

    async def cancel_task(self, task_id: str) -> CancelAnswer:
        self.cancelled.append(task_id)
        if self.error:
            raise self.error
        return CancelAnswer(True, f"task {task_id} canceled")


async def test_upstream_cancel_is_sent() -> None:
    upstream = _Upstream(None)
    await cancel_upstream(SimpleNamespace(upstream=upstream), "t1")  # type: ignore[arg-type]
    assert upstream.cancelled == ["t1"]


async def test_upstream_cancel_failure_is_logged_not_raised() -> None:
    upstream = _Upstream(UpstreamError("boom"))
    with capture_logs() as logs:
        await cancel_upstream(SimpleNamespace(upstream=upstream), "t1")  # type: ignore[arg-type]
    assert [e["event"] for e in logs] == ["upstream_cancel_failed"]
