"""The webhook receiver over real HTTP, on a real SQLite file: every bad delivery gets its answer
and changes nothing; good ones are durable before the 200."""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from service.jobs import Change, JobInput, JobRow, TaskUpsert
from service.states import Event, State
from service.store import open_store_for
from tests.fixtures.database import dump_database
from tests.fixtures.segflow import RunningSegflow

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"


def example(name: str) -> dict[str, Any]:
    return orjson.loads((DATA / name).read_bytes())


@pytest.fixture
async def app(segflow: Any) -> RunningSegflow:
    # No workers: these tests drive the job states themselves; port 9 has no upstream.
    running: RunningSegflow = await segflow("http://127.0.0.1:9", roles=())
    return running


async def new_job(app: RunningSegflow, state: State = State.SUBMITTED, task_id: str | None = None) -> JobRow:
    """A job moved through the real state machine to `state` (submitted with `task_id`)."""
    store = app.store
    _, jobs, _ = await store.create_batch(
        "acme",
        [JobInput("http://127.0.0.1:1/i.png", "car")],
        callback_url=None,
        idempotency_key=None,
        request_hash="h",
        now=0.0,
    )
    job = jobs[0]
    await store.claim_queued("test", now=1e12, limit=10_000, max_in_flight=10_000, lease_s=60)
    if state is State.UNKNOWN:
        await store.transition(job.id, lambda j, t: Change(Event.AMBIGUOUS, "test", set={"unknown_since": 1.0}))
    elif state is State.SUBMITTED:
        tid = task_id or str(uuid.uuid4())
        await store.transition(
            job.id,
            lambda j, t: Change(
                Event.CREATED, "test", set={"task_id": tid}, task=TaskUpsert(tid, 1, "created", "pending")
            ),
        )
    found = await store.get_job(job.id)
    assert found is not None and found.state is state
    return found


def body_for(
    app: RunningSegflow,
    job: JobRow,
    *,
    status: str = "completed",
    task_id: str | None = None,
    attempt: int = 1,
    template: str = "webhook-completed.json",
) -> dict[str, Any]:
    payload = copy.deepcopy(example(template))
    data = payload["data"]
    data["task_id"] = task_id or job.task_id or str(uuid.uuid4())
    data["status"] = status
    data["config"]["webhook_config"]["secret"] = secret_for(app, job.id, attempt)
    data["config"]["webhook_config"]["endpoint"] = f"{app.url}/webhooks/qubico/{job.id}"
    if status != "completed":
        data["output"] = None
    return payload


def secret_for(app: RunningSegflow, job_id: str, attempt: int = 1) -> str:
    return app.services.secrets.derive(job_id, attempt)


async def post(
    app: RunningSegflow, job_id: str, body: Any, secret: str | None, **headers: str
) -> tuple[int, dict[str, Any]]:
    """POST a webhook; `body` is a dict (sent as JSON), bytes, or an async iterator (sent chunked)."""
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    h = {"content-type": "application/json", **headers}
    if secret is not None:
        h["x-webhook-secret"] = secret
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{app.url}/webhooks/qubico/{job_id}", data=raw, headers=h) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def snapshot(app: RunningSegflow, job_id: str) -> tuple[State, int, str | None]:
    job = await app.store.get_job(job_id)
    assert job is not None
    return job.state, len(await app.store.job_events(job_id)), job.task_id


async def test_completed_webhook_moves_job_to_fetching_durably(app: RunningSegflow, tmp_path: Path) -> None:
    job = await new_job(app)
    status, answer = await post(app, job.id, body_for(app, job), secret_for(app, job.id))
    assert (status, answer["status"]) == (200, "applied")
    # Read through a second, independent connection: the write was committed before the 200.
    other = open_store_for(app.settings.database_url)
    await other.open()
    try:
        seen = await other.get_job(job.id)
    finally:
        await other.close()
    assert seen is not None and seen.state is State.FETCHING
    assert seen.output_urls == ("https://img.theapi.app/temp/9a1d2c3b-4e5f-4a6b-8c7d-0e1f2a3b4c5d.png",)


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", "other-job"])
async def test_missing_wrong_or_other_jobs_secret_is_401_and_changes_nothing(
    app: RunningSegflow, secret: str | None
) -> None:
    job = await new_job(app)
    if secret == "other-job":
        secret = secret_for(app, str(uuid.uuid4()))
    before = await snapshot(app, job.id)
    status, _ = await post(app, job.id, body_for(app, job), secret)
    assert status == 401
    assert await snapshot(app, job.id) == before


async def test_unknown_job_is_404(app: RunningSegflow) -> None:
    ghost = str(uuid.uuid4())
    payload = example("webhook-completed.json")
    status, answer = await post(app, ghost, payload, secret_for(app, ghost))
    assert (status, answer["status"]) == (404, "unknown_job")


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"timestamp": "x", "data": {}}', b"", b'{"data": 5}'])
async def test_malformed_body_is_400_and_changes_nothing(app: RunningSegflow, raw: bytes) -> None:
    job = await new_job(app)
    before = await snapshot(app, job.id)
    status, _ = await post(app, job.id, raw, secret_for(app, job.id))
    assert status == 400
    assert await snapshot(app, job.id) == before


async def test_other_models_payload_is_400_and_changes_nothing(app: RunningSegflow) -> None:
    job = await new_job(app)
    before = await snapshot(app, job.id)
    payload = example("webhook-other-model.json")
    payload["data"]["task_id"] = job.task_id
    status, answer = await post(app, job.id, payload, secret_for(app, job.id))
    assert (status, answer["status"]) == (400, "not_segment")
    assert await snapshot(app, job.id) == before


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_is_413_and_changes_nothing(app: RunningSegflow, chunked: bool) -> None:
    job = await new_job(app)
    before = await snapshot(app, job.id)
    payload = body_for(app, job)
    payload["data"]["logs"] = ["x" * 1000] * 300  # ~300 KB, past the 256 KiB limit
    raw = orjson.dumps(payload)

    async def stream() -> Any:
        for i in range(0, len(raw), 65536):
            yield raw[i : i + 65536]

    status, _ = await post(app, job.id, stream() if chunked else raw, secret_for(app, job.id))
    assert status == 413
    assert await snapshot(app, job.id) == before


async def test_replayed_delivery_is_200_and_changes_nothing(app: RunningSegflow) -> None:
    job = await new_job(app)
    payload = body_for(app, job)
    assert (await post(app, job.id, payload, secret_for(app, job.id)))[1]["status"] == "applied"
    after_first = await snapshot(app, job.id)
    status, answer = await post(app, job.id, payload, secret_for(app, job.id))
    assert (status, answer["status"]) == (200, "unchanged")
    assert await snapshot(app, job.id) == after_first


async def test_processing_after_completed_does_not_move_the_job_back(app: RunningSegflow) -> None:
    job = await new_job(app)
    await post(app, job.id, body_for(app, job), secret_for(app, job.id))
    status, _ = await post(app, job.id, body_for(app, job, status="processing"), secret_for(app, job.id))
    assert status == 200
    assert (await snapshot(app, job.id))[0] is State.FETCHING


async def test_another_jobs_task_with_this_jobs_secret_is_refused(app: RunningSegflow) -> None:
    mine = await new_job(app)
    theirs = await new_job(app)
    before = await snapshot(app, mine.id)
    payload = body_for(app, mine, task_id=theirs.task_id)
    status, answer = await post(app, mine.id, payload, secret_for(app, mine.id))
    assert (status, answer["status"]) == (400, "foreign_task")
    assert await snapshot(app, mine.id) == before


async def test_webhook_for_ambiguous_create_adopts_the_task(app: RunningSegflow) -> None:
    job = await new_job(app, State.UNKNOWN)
    task_id = str(uuid.uuid4())
    status, _ = await post(app, job.id, body_for(app, job, status="pending", task_id=task_id), secret_for(app, job.id))
    assert status == 200
    state, _, adopted = await snapshot(app, job.id)
    assert (state, adopted) == (State.SUBMITTED, task_id)
    tasks = await app.store.job_tasks(job.id)
    assert [(t.task_id, t.origin) for t in tasks] == [(task_id, "adopted")]


async def test_secret_of_an_attempt_not_yet_started_is_refused(app: RunningSegflow) -> None:
    job = await new_job(app, State.UNKNOWN)
    before = await snapshot(app, job.id)
    payload = body_for(app, job, status="pending", attempt=2)
    status, _ = await post(app, job.id, payload, secret_for(app, job.id, attempt=2))
    assert status == 400
    assert await snapshot(app, job.id) == before


async def test_the_secret_is_never_stored_or_logged(app: RunningSegflow, tmp_path: Path) -> None:
    job = await new_job(app, State.UNKNOWN)
    secret = secret_for(app, job.id)
    with capture_logs() as logs:
        await post(app, job.id, body_for(app, job, status="pending"), secret)
        await post(app, job.id, b"{broken", secret)
        await post(app, job.id, body_for(app, job, status="completed", task_id=str(uuid.uuid4())), secret)
    assert secret not in repr(logs)
    await app.store.close()  # flush SQLite's WAL so every byte written is in the files we read
    stored = await dump_database(app.settings.database_url)
    assert secret.encode() not in stored
    assert job.id.encode() in stored  # the search itself works: the job is in those bytes


async def test_concurrent_deliveries_are_each_durable(app: RunningSegflow) -> None:
    jobs = [await new_job(app) for _ in range(120)]
    results = await asyncio.gather(*(post(app, j.id, body_for(app, j), secret_for(app, j.id)) for j in jobs))
    assert all(status == 200 and answer["status"] == "applied" for status, answer in results)
    states = {(await app.store.get_job(j.id)).state for j in jobs}  # type: ignore[union-attr]
    assert states == {State.FETCHING}
