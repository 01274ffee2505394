"""Hostile request bodies against a live segflow on a real SQLite file: oversized, deeply nested,
wrong types, wrong content types, sent to the REST API and to the upstream webhook endpoint. Each
gets a clear 4xx in the documented error shape, nothing in the store changes, and the server goes
on answering."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.jobs import Change, TaskUpsert
from service.states import Event, State
from tests.fixtures.api import IMAGE, Answer, Api, running_api
from tests.fixtures.segflow import Starter

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
DEEP = b"[" * 100_000 + b"]" * 100_000  # past every JSON parser's nesting limit
NESTED_300: Any = []  # within orjson's read limit (1024), past its write limit (255)
for _ in range(299):
    NESTED_300 = [NESTED_300]
VALID_ITEM = {"image": IMAGE, "prompt": "car"}


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as a:
        yield a


async def store_state(api: Api) -> tuple[Any, ...]:
    """Everything a refused request could have changed, as the store reports it."""
    store = api.services.store
    jobs = await store.job_counts()
    subs = await store.list_subscriptions("acme")
    events = await store.list_events("acme", since=0.0, limit=1000)
    return dict(jobs), [s.id for s in subs], [e.id for e in events]


async def still_serving(api: Api) -> None:
    """The server answers a health probe and accepts (then forgets nothing of) a valid request."""
    assert (await api.call("GET", "/healthz", tenant=None)).status == 200
    ok = await api.call("POST", "/v1/batches", json={"items": [VALID_ITEM]})
    assert ok.status == 202, ok.raw


def assert_refused(answer: Answer, *statuses: int) -> None:
    assert answer.status in statuses, (answer.status, answer.raw[:300])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.body
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)


WRONG_BATCHES: list[tuple[str, Any]] = [
    ("array body", [VALID_ITEM]),
    ("null body", None),
    ("number body", 12),
    ("string body", "items"),
    ("items a string", {"items": "cat.png"}),
    ("items an object", {"items": VALID_ITEM}),
    ("item a number", {"items": [1]}),
    ("item an array", {"items": [[IMAGE, "car"]]}),
    ("image a number", {"items": [{"image": 5, "prompt": "car"}]}),
    ("image an object", {"items": [{"image": {"url": IMAGE}, "prompt": "car"}]}),
    ("prompt a list", {"items": [{"image": IMAGE, "prompt": ["car"]}]}),
    ("prompt null", {"items": [{"image": IMAGE, "prompt": None}]}),
    ("segment_factor a string", {"items": [{**VALID_ITEM, "segment_factor": "3"}]}),
    ("segment_factor true", {"items": [{**VALID_ITEM, "segment_factor": True}]}),
    ("segment_factor a float", {"items": [{**VALID_ITEM, "segment_factor": 1.5}]}),
    ("segment_factor huge", {"items": [{**VALID_ITEM, "segment_factor": 2**63}]}),
    ("segment_factor 1e308", {"items": [{**VALID_ITEM, "segment_factor": 1e308}]}),
    ("prompt with NUL", {"items": [{"image": IMAGE, "prompt": "car\x00"}]}),  # a 500 on PostgreSQL before
    ("negative_prompt with NUL", {"items": [{**VALID_ITEM, "negative_prompt": "\x00"}]}),
    ("prompts with NUL", {"images": [IMAGE], "prompts": ["a\x00b"]}),
    ("metadata a list", {"items": [{**VALID_ITEM, "metadata": [1, 2]}]}),
    ("metadata nested 300 deep", {"items": [{**VALID_ITEM, "metadata": {"a": NESTED_300}}]}),
    ("callback_url a number", {"items": [VALID_ITEM], "callback_url": 5}),
    ("images not a list", {"images": IMAGE, "prompts": ["car"]}),
    ("prompts of numbers", {"images": [IMAGE], "prompts": [1, 2]}),
    ("unknown field nested 300 deep", {"items": [VALID_ITEM], "extra": NESTED_300}),
]


@pytest.mark.parametrize(("case", "body"), WRONG_BATCHES, ids=[c for c, _ in WRONG_BATCHES])
async def test_wrong_types_in_a_batch_are_422_and_store_nothing(api: Api, case: str, body: Any) -> None:
    before = await store_state(api)
    raw = _dumps(body)
    answer = await api.call("POST", "/v1/batches", data=raw, headers={"content-type": "application/json"})
    assert_refused(answer, 422)
    assert answer.body["detail"], "a 422 names the field and the reason"
    assert await store_state(api) == before
    await still_serving(api)


WRONG_SUBSCRIPTIONS: list[tuple[str, Any]] = [
    ("array body", [{"url": "https://hooks.example.com/x"}]),
    ("url a number", {"url": 443}),
    ("url a list", {"url": ["https://hooks.example.com/x"]}),
    ("event_types a string", {"url": "https://hooks.example.com/x", "event_types": "job.failed"}),
    ("event_types of numbers", {"url": "https://hooks.example.com/x", "event_types": [1]}),
    ("ed25519 a string", {"url": "https://hooks.example.com/x", "ed25519": "yes"}),
    ("event_types nested 300 deep", {"url": "https://hooks.example.com/x", "event_types": NESTED_300}),
]


@pytest.mark.parametrize(("case", "body"), WRONG_SUBSCRIPTIONS, ids=[c for c, _ in WRONG_SUBSCRIPTIONS])
async def test_wrong_types_in_a_subscription_are_422_and_store_nothing(api: Api, case: str, body: Any) -> None:
    before = await store_state(api)
    answer = await api.call(
        "POST", "/v1/subscriptions", data=_dumps(body), headers={"content-type": "application/json"}
    )
    assert_refused(answer, 422)
    assert await store_state(api) == before
    await still_serving(api)


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/subscriptions"])
@pytest.mark.parametrize(
    "raw",
    [DEEP, b"{" * 50_000, b'{"items": ' + b"[" * 2000 + b"]" * 2000 + b"}", b'{"items": [', b"\xff\xfe", b""],
    ids=["100k-nested-arrays", "50k-open-objects", "2000-nested-items", "truncated", "not-utf8", "empty"],
)
async def test_deeply_nested_or_broken_json_is_400_and_stores_nothing(api: Api, path: str, raw: bytes) -> None:
    before = await store_state(api)
    answer = await api.call("POST", path, data=raw, headers={"content-type": "application/json"})
    assert_refused(answer, 400, 422)
    assert await store_state(api) == before
    await still_serving(api)


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/subscriptions", "/v1/inputs"])
async def test_a_body_declared_larger_than_the_limit_is_413_before_it_is_sent(api: Api, path: str) -> None:
    before = await store_state(api)
    huge = b'{"items": [' + b" " * (25 * 1024 * 1024) + b"]}"  # past both the API and the upload limits
    answer = await api.call("POST", path, data=huge, headers={"content-type": "application/json"})
    assert_refused(answer, 413)
    assert await store_state(api) == before
    await still_serving(api)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", None],
)
async def test_a_batch_sent_with_another_content_type_is_refused_and_stores_nothing(
    api: Api, content_type: str | None
) -> None:
    before = await store_state(api)
    headers = {"content-type": content_type} if content_type else {}
    for raw in (b"image=https%3A%2F%2Fimages.example.com%2Fcat.png&prompt=car", b"<batch><image/></batch>"):
        answer = await api.call("POST", "/v1/batches", data=raw, headers=headers)
        assert_refused(answer, 400, 415, 422)
    assert await store_state(api) == before
    await still_serving(api)


# The upstream webhook endpoint ------------------------------------------------------------------


async def submitted_job(api: Api) -> tuple[str, str]:
    """A job through the real state machine to `submitted`, with its upstream task id."""
    job_id = (await api.submit())["jobs"][0]["job_id"]
    store = api.services.store
    task_id = "5f0c1e7a-3b9d-4a61-8e2f-7c4d9b1a6e03"
    for change in (
        Change(Event.CLAIM, "test", set={"lease_owner": "test", "lease_until": 1e12}),
        Change(Event.CREATED, "test", set={"task_id": task_id}, task=TaskUpsert(task_id, 1, "created", "pending")),
    ):
        assert (await store.transition(job_id, lambda _j, _t, c=change: c)).applied
    return job_id, task_id


async def job_state(api: Api, job_id: str) -> tuple[Any, ...]:
    store = api.services.store
    job = await store.get_job(job_id)
    assert job is not None
    return (
        job.state,
        job.task_id,
        job.output_urls,
        len(await store.job_events(job_id)),
        len(await store.job_tasks(job_id)),
    )


def completed_body(for_task: str, **data: Any) -> dict[str, Any]:
    body = copy.deepcopy(orjson.loads((DATA / "webhook-completed.json").read_bytes()))
    body["data"]["task_id"] = for_task
    body["data"].update(data)
    return body


async def post_webhook(api: Api, job_id: str, raw: bytes, content_type: str | None = "application/json") -> Answer:
    headers = {"x-webhook-secret": api.services.secrets.derive(job_id, 1)}
    if content_type:
        headers["content-type"] = content_type
    return await api.call("POST", f"/webhooks/qubico/{job_id}", tenant=None, data=raw, headers=headers)


def webhook_cases(task_id: str) -> list[tuple[str, bytes, int]]:
    wrong: list[tuple[str, Any]] = [
        ("data a string", {"timestamp": 1, "data": "completed"}),
        ("status a number", completed_body(task_id, status=200)),
        ("task_id a number", completed_body(task_id, task_id=5)),
        ("output a list", completed_body(task_id, output=["https://img.theapi.app/a.png"])),
        ("image_urls of objects", completed_body(task_id, output={"image_urls": [{"url": "x"}]})),
        ("error code a string", completed_body(task_id, error={"code": "10000"})),
        ("logs nested 300 deep", completed_body(task_id, logs=[NESTED_300])),
        ("meta time a number", completed_body(task_id, meta={"ended_at": 1729679521})),
        ("timestamp a string", {**completed_body(task_id), "timestamp": "1729679521"}),
        ("task_id with a NUL", completed_body(task_id, task_id=task_id + "\x00")),
        ("status with a NUL", completed_body(task_id, status="completed\x00")),
        ("output URL with a NUL", completed_body(task_id, output={"image_url": "https://img.theapi.app/a\x00.png"})),
    ]
    return [
        ("100k nested arrays", DEEP, 400),
        ("not utf-8", b"\xff\xfe\x00{", 400),
        ("empty", b"", 400),
        ("oversized", b'{"timestamp": 1, "data": ' + b" " * 300_000 + b"{}}", 413),
        *((name, _dumps(body), 400) for name, body in wrong),
    ]


async def test_hostile_webhook_bodies_are_4xx_and_change_nothing(api: Api) -> None:
    job_id, task_id = await submitted_job(api)
    before = await job_state(api, job_id)
    for name, raw, status in webhook_cases(task_id):
        answer = await post_webhook(api, job_id, raw)
        assert answer.status == status, (name, answer.status, answer.raw[:200])
        assert answer.headers["content-type"].startswith("application/json"), name
        assert await job_state(api, job_id) == before, name
    # Still serving, and the real completion still applies.
    assert (await post_webhook(api, job_id, orjson.dumps(completed_body(task_id)))).status == 200
    assert (await job_state(api, job_id))[0] is State.FETCHING


async def test_a_nul_in_an_upstream_error_message_is_kept_visible_and_stored(api: Api) -> None:
    """PostgreSQL stores no NUL in text: free text from the upstream keeps it as U+FFFD instead of
    failing the webhook (which the upstream would re-send forever)."""
    job_id, task_id = await submitted_job(api)
    body = completed_body(task_id, status="failed", output=None, error={"code": 10000, "message": "bad\x00image"})
    answer = await post_webhook(api, job_id, orjson.dumps(body))
    assert answer.status == 200, answer.raw
    job = await api.services.store.get_job(job_id)
    assert job is not None and job.state is State.FAILED
    assert job.error_message == "bad\ufffdimage"


async def test_webhook_content_type_does_not_matter_but_the_body_does(api: Api) -> None:
    """The upstream's content type is not the contract's concern: a form body is just malformed."""
    job_id, _task_id = await submitted_job(api)
    before = await job_state(api, job_id)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        answer = await post_webhook(api, job_id, b"status=completed&task_id=x", ctype)
        assert answer.status == 400, (ctype, answer.raw)
    assert await job_state(api, job_id) == before


def _dumps(value: Any) -> bytes:
    """JSON bytes for test bodies, including values nested deeper than orjson writes."""
    if isinstance(value, list):
        return b"[" + b",".join(_dumps(v) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + _dumps(v) for k, v in value.items()) + b"}"
    return orjson.dumps(value)
