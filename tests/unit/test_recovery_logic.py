"""The pure parts of recovery: the adaptive schedule from observed timings, which job a listed
task's webhook names, when the history's silence is an answer, and the timings a snapshot records."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import msgspec

from service.completion import SnapshotPolicy, decide_snapshot
from service.history import attempt_of, conclusive_at, webhook_endpoint
from service.settings import Settings
from service.states import State
from service.timings import MIN_SAMPLES, quantile, schedule
from service.upstream.wire import TaskStatus
from tests.fixtures.rows import job_row
from tests.unit.test_completion import snap

S = Settings()  # the shipped defaults: poll_after_s 30, floor 3; window 600, floor 30


def test_quantile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert (quantile(values, 0.9), quantile(values, 0.5), quantile(values, 0.99)) == (9.0, 5.0, 10.0)
    assert quantile([7.0], 0.9) == 7.0


def test_without_enough_observations_the_first_poll_is_the_floor_and_the_window_the_cap() -> None:
    few = [2.0] * (MIN_SAMPLES - 1)
    assert schedule(few, few, S) == schedule((), (), S)
    assert schedule((), (), S).first_poll_s == S.poll_floor_s == 3.0
    assert schedule((), (), S).adoption_window_s == S.adoption_window_s == 600.0


def test_the_first_poll_follows_the_p90_run_time_within_floor_and_cap() -> None:
    runs = [1.0] * 80 + [4.0] * 20  # p90 is 4 s
    assert schedule(runs, (), S).first_poll_s == 6.0  # 1.5 x p90
    assert schedule([0.2] * 50, (), S).first_poll_s == 3.0  # floored
    assert schedule([300.0] * 50, (), S).first_poll_s == 30.0  # never later than poll_after_s
    # A poll_after_s below the floor wins (tests and impatient operators set it low).
    assert schedule([10.0] * 50, (), dataclasses.replace(S, poll_after_s=1.0)).first_poll_s == 1.0


def test_the_adoption_window_follows_the_create_to_webhook_delay_within_floor_and_cap() -> None:
    assert schedule((), [2.0] * 98 + [40.0] * 2, S).adoption_window_s == 80.0  # 2 x p99
    assert schedule((), [1.0] * 50, S).adoption_window_s == 30.0  # floored
    assert schedule((), [1000.0] * 50, S).adoption_window_s == 600.0  # today's 600 s stays the cap


def test_a_listed_task_is_matched_to_its_job_and_attempt_by_the_webhook_path() -> None:
    job_id = "0b7e2f4c-1d2e-4f00-8a1b-2c3d4e5f6a7b"
    url = webhook_endpoint(S, job_id, 2)
    assert url == f"http://127.0.0.1:8600/webhooks/qubico/{job_id}/2"
    assert attempt_of(url) == 2
    assert attempt_of(f"https://new-host.example/webhooks/qubico/{job_id}/2") == 2  # public_url changed
    assert attempt_of(f"https://h/webhooks/qubico/{job_id}") is None  # the older path: no attempt
    for other in (None, "", "https://webhook.site/xxxxx", f"https://h/webhooks/qubico/{job_id}/x"):
        assert attempt_of(other) is None


def test_the_history_is_conclusive_only_after_the_create_timeout_and_the_settle_delay() -> None:
    job = job_row(State.UNKNOWN, sent_at=1000.0, unknown_since=1031.0)
    assert conclusive_at(job, S) == 1000.0 + S.upstream_timeout_s + S.history_settle_s
    older = job_row(State.UNKNOWN, unknown_since=2000.0)  # a row from before sent_at existed
    assert conclusive_at(older, S) == 2000.0 + S.upstream_timeout_s + S.history_settle_s


def test_a_final_snapshot_records_the_run_time_and_a_webhook_its_delay_after_the_create() -> None:
    policy = SnapshotPolicy(max_attempts=3, poll_after_s=30.0, retry_base_s=2.0, retry_max_s=60.0)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    done = msgspec.structs.replace(
        snap(TaskStatus.COMPLETED), created_at=created, ended_at=created + timedelta(seconds=2.5)
    )
    job = job_row(State.SUBMITTED, task_id="T1", sent_at=100.0)
    by_webhook = decide_snapshot(done, attempt=1, source="webhook", policy=policy, now=104.0)(job, None)
    assert by_webhook is not None and by_webhook.task is not None
    assert (by_webhook.task.run_s, by_webhook.task.heard_after_s) == (2.5, 4.0)
    by_poll = decide_snapshot(done, attempt=1, source="poll", policy=policy, now=104.0)(job, None)
    assert by_poll is not None and by_poll.task is not None
    assert (by_poll.task.run_s, by_poll.task.heard_after_s) == (2.5, None)  # a poll's time says nothing
    running = decide_snapshot(snap(TaskStatus.PROCESSING), attempt=1, source="webhook", policy=policy, now=104.0)
    change = running(job_row(State.SUBMITTING, sent_at=100.0), None)
    assert change is not None and change.task is not None and change.task.run_s is None
