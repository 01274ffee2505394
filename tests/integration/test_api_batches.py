"""Submitting batches over real HTTP on a real SQLite file: both body shapes, idempotent replays,
and strict validation that stores nothing on any problem."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fixtures.api import IMAGE, Api, running_api
from tests.fixtures.segflow import Starter

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


async def test_items_are_accepted_as_queued_jobs_in_order(api: Api) -> None:
    body = {
        "items": [
            {
                "image": IMAGE,
                "prompt": "cat",
                "negative_prompt": "dog",
                "segment_factor": -5,
                "metadata": {"row": 7},
            },
            {"image": "http://93.184.216.34/x.jpg", "prompt": "tree"},
        ]
    }
    answer = await api.call("POST", "/v1/batches", json=body)
    assert answer.status == 202
    assert [j["state"] for j in answer.body["jobs"]] == ["queued", "queued"]
    first = (await api.call("GET", f"/v1/jobs/{answer.body['jobs'][0]['job_id']}")).body
    assert (first["prompt"], first["negative_prompt"], first["segment_factor"], first["metadata"]) == (
        "cat",
        "dog",
        -5,
        {"row": 7},
    )
    assert first["batch_id"] == answer.body["batch_id"]


async def test_images_and_prompts_make_every_pair(api: Api) -> None:
    images = [f"https://images.example.com/{i}.png" for i in range(3)]
    body = {"images": images, "prompts": ["cat", "dog"], "negative_prompt": "sky", "segment_factor": 3}
    created = await api.submit(body)
    assert len(created["jobs"]) == 6
    page = (await api.call("GET", f"/v1/batches/{created['batch_id']}/jobs")).body["jobs"]
    assert {(j["image"], j["prompt"]) for j in page} == {(i, p) for i in images for p in ("cat", "dog")}
    assert await api.job_count() == 6


async def test_same_idempotency_key_and_body_answers_the_same_batch_stored_once(api: Api) -> None:
    body = {"items": [{"image": IMAGE, "prompt": f"thing {i}"} for i in range(3)]}
    first = await api.call("POST", "/v1/batches", json=body, headers={"Idempotency-Key": "order-42"})
    again = await api.call("POST", "/v1/batches", json=body, headers={"Idempotency-Key": "order-42"})
    assert (first.status, again.status) == (202, 202)
    assert again.body == first.body
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert await api.job_count() == 3


async def test_same_idempotency_key_with_another_body_is_a_conflict(api: Api) -> None:
    await api.submit(n=1, **{"Idempotency-Key": "order-42"})
    answer = await api.call(
        "POST",
        "/v1/batches",
        json={"items": [{"image": IMAGE, "prompt": "other"}]},
        headers={"Idempotency-Key": "order-42"},
    )
    assert (answer.status, answer.error) == (409, "idempotency_conflict")
    assert await api.job_count() == 1


async def test_idempotency_keys_belong_to_their_tenant(api: Api) -> None:
    mine = await api.submit(n=1, **{"Idempotency-Key": "k1"})
    theirs = await api.submit(n=1, tenant="globex", **{"Idempotency-Key": "k1"})
    assert theirs["batch_id"] != mine["batch_id"]


def _item(**fields: Any) -> dict[str, Any]:
    return {"items": [{"image": IMAGE, "prompt": "cat"}, {"image": IMAGE, "prompt": "dog", **fields}]}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("relative URL", _item(image="/images/cat.png"), "items[1].image"),
    ("ftp URL", _item(image="ftp://example.com/cat.png"), "items[1].image"),
    ("URL without host", _item(image="https:///cat.png"), "items[1].image"),
    ("URL too long", _item(image="https://example.com/" + "a" * 2040), "items[1].image"),
    ("loopback IP", _item(image="http://127.0.0.1/cat.png"), "items[1].image"),
    ("loopback IPv6", _item(image="http://[::1]/cat.png"), "items[1].image"),
    ("decimal loopback", _item(image="http://2130706433/cat.png"), "items[1].image"),
    ("private IP", _item(image="https://10.1.2.3/cat.png"), "items[1].image"),
    ("link-local IP", _item(image="http://169.254.169.254/latest/meta-data"), "items[1].image"),
    ("localhost", _item(image="http://localhost:8080/cat.png"), "items[1].image"),
    ("credentials in URL", _item(image="https://user:pw@example.com/cat.png"), "items[1].image"),
    ("image missing", {"items": [{"prompt": "cat"}]}, "items[0].image"),
    ("empty prompt", _item(prompt=""), "items[1].prompt"),
    ("blank prompt", _item(prompt="   "), "items[1].prompt"),
    ("prompt too long", _item(prompt="x" * 1001), "items[1].prompt"),
    ("prompt not a string", _item(prompt=5), "items[1].prompt"),
    ("negative prompt too long", _item(negative_prompt="x" * 1001), "items[1].negative_prompt"),
    ("segment_factor bool", _item(segment_factor=True), "items[1].segment_factor"),
    ("segment_factor string", _item(segment_factor="3"), "items[1].segment_factor"),
    ("segment_factor float", _item(segment_factor=1.5), "items[1].segment_factor"),
    ("segment_factor out of range", _item(segment_factor=513), "items[1].segment_factor"),
    ("metadata not an object", _item(metadata=[1]), "items[1].metadata"),
    ("metadata too big", _item(metadata={"blob": "x" * 4100}), "items[1].metadata"),
    ("unknown item field", _item(colour="red"), "items[1].colour"),
    ("unknown top-level field", {**_item(), "priority": 1}, "priority"),
    ("item not an object", {"items": ["cat"]}, "items[0]"),
    ("no items", {"items": []}, "items"),
    ("items not an array", {"items": {"image": IMAGE}}, "items"),
    ("nothing to do", {}, "items"),
    ("body not an object", [1, 2], ""),
    ("both shapes", {**_item(), "images": [IMAGE], "prompts": ["cat"]}, ""),
    ("http callback", {**_item(), "callback_url": "http://hooks.example.com/x"}, "callback_url"),
    ("private callback", {**_item(), "callback_url": "https://192.168.1.10/x"}, "callback_url"),
    ("cross: no prompts", {"images": [IMAGE], "prompts": []}, "prompts"),
    ("cross: bad image", {"images": [IMAGE, "nope"], "prompts": ["cat"]}, "images[1]"),
    ("cross: metadata is per item", {"images": [IMAGE], "prompts": ["cat"], "metadata": {}}, "metadata"),
]


async def test_a_tenant_lists_only_its_own_batches_newest_first_page_by_page(api: Api) -> None:
    first = await api.submit(n=2)
    second = await api.submit(n=1)
    await api.submit(n=1, tenant="globex")
    page = (await api.call("GET", "/v1/batches?limit=1")).body
    assert [b["batch_id"] for b in page["batches"]] == [second["batch_id"]]
    assert page["batches"][0]["counts"]["queued"] == 1 and page["batches"][0]["total"] == 1
    rest = (await api.call("GET", f"/v1/batches?cursor={page['next_cursor']}")).body
    assert [b["batch_id"] for b in rest["batches"]] == [first["batch_id"]]
    assert rest["next_cursor"] is None
    assert (await api.call("GET", "/v1/batches?limit=0")).paths == ["limit"]


@pytest.mark.parametrize(("body", "path"), [(b, p) for _, b, p in INVALID], ids=[n for n, _, _ in INVALID])
async def test_invalid_batch_is_refused_with_the_field_path_and_stores_nothing(api: Api, body: Any, path: str) -> None:
    answer = await api.call("POST", "/v1/batches", json=body)
    assert (answer.status, answer.error) == (422, "invalid_request")
    assert path in answer.paths
    assert await api.job_count() == 0


async def test_every_problem_is_reported_at_once(api: Api) -> None:
    body = {"items": [{"image": "nope", "prompt": ""}, {"image": IMAGE, "prompt": "ok", "segment_factor": True}]}
    answer = await api.call("POST", "/v1/batches", json=body)
    assert answer.paths == ["items[0].image", "items[0].prompt", "items[1].segment_factor"]


async def test_too_many_items_is_refused(api: Api) -> None:
    most = api.services.settings.max_batch_items
    answer = await api.call("POST", "/v1/batches", json={"images": [IMAGE] * (most + 1), "prompts": ["cat"]})
    assert (answer.status, answer.paths) == (422, ["prompts"])
    answer = await api.call("POST", "/v1/batches", json={"items": [{"image": IMAGE, "prompt": "cat"}] * (most + 1)})
    assert (answer.status, answer.paths) == (422, ["items"])
    assert await api.job_count() == 0


async def test_malformed_json_is_a_bad_request(api: Api) -> None:
    answer = await api.call("POST", "/v1/batches", data=b'{"items": [', headers={"content-type": "application/json"})
    assert (answer.status, answer.error) == (400, "malformed_json")
    assert await api.job_count() == 0


async def test_body_over_the_limit_is_refused_before_it_is_read(api: Api) -> None:
    limit = api.services.settings.max_request_body
    padding = "x" * limit
    answer = await api.call("POST", "/v1/batches", json={"items": [{"image": IMAGE, "prompt": padding}]})
    assert (answer.status, answer.error) == (413, "body_too_large")
    assert await api.job_count() == 0


async def test_streamed_body_over_the_limit_is_refused(api: Api) -> None:
    limit = api.services.settings.max_request_body

    async def chunks() -> Any:  # no Content-Length: the limit must hold while reading
        yield b'{"items": [{"image": "' + IMAGE.encode() + b'", "prompt": "'
        for _ in range(limit // 65536 + 1):
            yield b"x" * 65536
        yield b'"}]}'

    answer = await api.call("POST", "/v1/batches", data=chunks(), headers={"content-type": "application/json"})
    assert (answer.status, answer.error) == (413, "body_too_large")
    assert await api.job_count() == 0


async def test_overlong_idempotency_key_is_refused(api: Api) -> None:
    answer = await api.call("POST", "/v1/batches", json=_item(), headers={"Idempotency-Key": "k" * 201})
    assert (answer.status, answer.paths) == (422, ["headers.Idempotency-Key"])
    assert await api.job_count() == 0
