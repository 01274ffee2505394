"""The sandbox's task API over real HTTP: envelopes, validation, keys, credit and limits."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.fixtures.sandbox import ImageHost, RunningSandbox, StartSandbox, image_bytes

ZERO_TIME = "0001-01-01T00:00:00Z"


async def post_task(http: aiohttp.ClientSession, sb: RunningSandbox, body: Any, **headers: str) -> tuple[int, Any]:
    hdrs = headers or sb.headers
    async with http.post(f"{sb.url}/api/v1/task", json=body, headers=hdrs) as response:
        return response.status, await response.json()


@pytest.mark.parametrize("create_status", ["", "pending"])
async def test_create_answers_a_pending_task_in_the_envelope(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, create_status: str
) -> None:
    sb = await sandbox(create_status=create_status)  # "" is the documented example's, and the default
    status, envelope = await post_task(sandbox_http, sb, sb.body(prompt="clothes,shoes", segment_factor=-15))

    assert status == 200
    assert envelope["code"] == 200 and envelope["message"] == "success"
    task = envelope["data"]
    uuid.UUID(task["task_id"])
    assert task["status"] == create_status and task["output"] is None
    assert sb.engine.tasks[task["task_id"]].status in ("pending", "processing", "completed")
    assert task["model"] == "Qubico/image-toolkit" and task["task_type"] == "segment"
    assert task["input"] == {
        "image": sb.sample_url(),
        "prompt": "clothes,shoes",
        "negative_prompt": "",
        "segment_factor": -15,
    }
    assert task["meta"]["started_at"] == ZERO_TIME and task["meta"]["ended_at"] == ZERO_TIME
    assert task["meta"]["usage"] == {"type": "llm", "frozen": 0, "consume": 0}
    assert task["error"] == {"code": 0, "raw_message": "", "message": "", "detail": None}
    assert task["logs"] == [] and task["detail"] is None


async def test_get_shows_the_completed_task_with_its_output(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    _, created = await post_task(sandbox_http, sb, sb.body(endpoint="http://127.0.0.1:9/x", secret="s3cret"))
    task_id = created["data"]["task_id"]
    await sb.wait_final(task_id)

    async with sandbox_http.get(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as response:
        task = (await response.json())["data"]

    assert response.status == 200 and task["status"] == "completed"
    url = task["output"]["image_url"]
    assert task["output"]["image_urls"] == [url] and url.startswith(f"{sb.url}/temp/")
    assert task["config"]["webhook_config"] == {"endpoint": "http://127.0.0.1:9/x", "secret": "s3cret"}
    assert ZERO_TIME not in (task["meta"]["started_at"], task["meta"]["ended_at"])
    assert task["meta"]["created_at"].endswith("+00:00")
    assert task["meta"]["usage"]["consume"] == 100000


async def test_unknown_task_is_404_in_the_error_envelope(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox()
    async with sandbox_http.get(f"{sb.url}/api/v1/task/{uuid.uuid4()}", headers=sb.headers) as response:
        assert response.status == 404
        assert (await response.json()) == {"code": 404, "data": None, "message": "task not found"}


async def test_legacy_cancel_ends_a_pending_task_as_failed_and_refuses_a_final_one(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(latency_min_s=5.0, latency_max_s=5.0, cancel="legacy")
    _, created = await post_task(sandbox_http, sb, sb.body())
    task_id = created["data"]["task_id"]

    async with sandbox_http.delete(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as response:
        cancelled = await response.json()
    async with sandbox_http.delete(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as again:
        refused = await again.json()

    assert response.status == 200 and cancelled["data"]["status"] == "failed"
    assert cancelled["data"]["error"]["message"] == "task cancelled by user"
    assert again.status == 400 and refused["code"] == 400 and refused["data"] is None


async def test_another_key_cannot_see_the_task(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(api_keys=("key-a", "key-b"))
    _, created = await post_task(sandbox_http, sb, sb.body(), **{"x-api-key": "key-a"})
    task_id = created["data"]["task_id"]
    async with sandbox_http.get(f"{sb.url}/api/v1/task/{task_id}", headers={"x-api-key": "key-b"}) as response:
        assert response.status == 404


def _with_input(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, "input": {**body["input"], **changes}}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: {**b, "model": "luma"}, "model"),
        (lambda b: {**b, "task_type": "video_generation"}, "task_type"),
        (lambda b: _with_input(b, image="not a url"), "input.image"),
        (lambda b: _with_input(b, image="ftp://example.com/a.png"), "input.image"),
        (lambda b: _with_input(b, prompt=""), "input.prompt"),
        (lambda b: _with_input(b, negative_prompt=None), "input.negative_prompt"),
        (lambda b: _with_input(b, segment_factor=1.5), "input.segment_factor"),
        (lambda b: {**b, "config": {"service_mode": "vip"}}, "config.service_mode"),
        (lambda b: {**b, "config": {"webhook_config": {"endpoint": "nope"}}}, "endpoint"),
    ],
)
async def test_invalid_body_is_400_and_creates_nothing(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, change: Any, reason: str
) -> None:
    sb = await sandbox()
    status, envelope = await post_task(sandbox_http, sb, change(sb.body()))

    assert status == 400 and envelope["code"] == 400 and envelope["data"] is None
    assert reason in envelope["message"]
    assert sb.engine.stats.tasks_created == 0 and sb.engine.stats_json()["creates_rejected"] == {"400": 1}


@pytest.mark.parametrize(
    ("name", "data", "content_type", "reason"),
    [
        ("wide.png", image_bytes(4000, 10), "image/png", "at most 3072 px"),
        ("anim.gif", image_bytes(20, 20, "GIF"), "image/gif", "JPG or PNG"),
        ("junk.png", b"not an image at all", "image/png", "not a readable"),
    ],
    ids=["too-wide", "gif", "not-an-image"],
)
async def test_unacceptable_image_is_400_and_creates_nothing_when_told_to(
    sandbox: StartSandbox,
    sandbox_http: aiohttp.ClientSession,
    image_host: ImageHost,
    name: str,
    data: bytes,
    content_type: str,
    reason: str,
) -> None:
    sb = await sandbox(bad_image="400")
    status, envelope = await post_task(sandbox_http, sb, sb.body(image_host.add(name, data, content_type)))

    assert status == 400 and reason in envelope["message"]
    assert sb.engine.tasks == {}


async def test_missing_image_is_400(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, image_host: ImageHost
) -> None:
    sb = await sandbox(bad_image="400")
    status, envelope = await post_task(sandbox_http, sb, sb.body(f"{image_host.url}/absent.png"))
    assert status == 400 and "HTTP 404" in envelope["message"]


async def test_oversized_download_is_400(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, image_host: ImageHost
) -> None:
    sb = await sandbox(max_image_bytes=1000, bad_image="400")
    status, envelope = await post_task(sandbox_http, sb, sb.body(image_host.add("big.png", b"x" * 5000)))
    assert status == 400 and "larger than" in envelope["message"]


@pytest.mark.parametrize(("headers", "message"), [({}, "missing"), ({"x-api-key": "wrong"}, "invalid")])
async def test_missing_or_wrong_key_is_401_and_creates_nothing(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, headers: dict[str, str], message: str
) -> None:
    sb = await sandbox()
    async with sandbox_http.post(f"{sb.url}/api/v1/task", json=sb.body(), headers=headers) as response:
        envelope = await response.json()
    assert response.status == 401 and envelope["code"] == 401 and message in envelope["message"]
    assert sb.engine.tasks == {}


async def test_empty_key_list_accepts_any_key(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(api_keys=())
    status, _ = await post_task(sandbox_http, sb, sb.body(), **{"x-api-key": "whatever"})
    assert status == 200


async def test_402_once_the_credit_is_spent(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(credit_usd=0.02)
    statuses = [(await post_task(sandbox_http, sb, sb.body()))[0] for _ in range(3)]
    assert statuses == [200, 200, 402]
    assert len(sb.engine.tasks) == 2 and sb.engine.stats_json()["credit_left_usd"] == 0.0


async def test_failed_task_gives_its_credit_back(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(credit_usd=0.01, task_fail=1.0)
    _, created = await post_task(sandbox_http, sb, sb.body())
    await sb.wait_final(created["data"]["task_id"])
    assert (await post_task(sandbox_http, sb, sb.body()))[0] == 200


async def test_concurrency_limit_is_429_with_retry_after(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(concurrency_limit=2, latency_min_s=5.0, latency_max_s=5.0)
    for _ in range(2):
        assert (await post_task(sandbox_http, sb, sb.body()))[0] == 200
    async with sandbox_http.post(f"{sb.url}/api/v1/task", json=sb.body(), headers=sb.headers) as response:
        envelope = await response.json()
    assert response.status == 429 and "concurrency" in envelope["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert len(sb.engine.tasks) == 2


async def test_rate_limit_is_429_with_retry_after(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(rate_limit_per_s=0.5)
    assert (await post_task(sandbox_http, sb, sb.body()))[0] == 200
    async with sandbox_http.post(f"{sb.url}/api/v1/task", json=sb.body(), headers=sb.headers) as response:
        envelope = await response.json()
    assert response.status == 429 and "rate" in envelope["message"]
    assert 1 <= int(response.headers["retry-after"]) <= 2
    assert sb.engine.stats_json()["creates_rejected"] == {"429": 1}


async def test_price_and_pixels_are_accounted(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, image_host: ImageHost
) -> None:
    sb = await sandbox()
    big = image_host.add("big.png", image_bytes(1500, 1000))  # 1.5 MP: billed as 2 million pixels
    _, created = await post_task(sandbox_http, sb, sb.body(big))
    await sb.wait_final(created["data"]["task_id"])

    async with sandbox_http.get(f"{sb.url}/_sandbox/tasks") as response:
        (row,) = await response.json()
    stats = sb.engine.stats_json()
    assert row["pixels"] == 1_500_000 and row["price_usd"] == 0.02
    assert stats["pixels_total"] == 1_500_000 and stats["price_usd_total"] == 0.02
