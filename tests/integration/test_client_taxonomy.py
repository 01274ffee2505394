"""The upstream client against real servers that misbehave on purpose, and against the sandbox's
faults: every failure lands in the right class, and no key or secret leaks into errors or logs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from service.upstream.client import CancelAnswer, UpstreamClient, UpstreamTimeouts
from service.upstream.errors import (
    UpstreamAmbiguous,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTransient,
)
from service.upstream.wire import CreateRequest, TaskStatus

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
KEY = "upstream-api-key-never-logged"
SECRET = "per-job-secret-never-logged"
REQ = CreateRequest("https://img.example/a.png", "car", "", -15, "https://segflow.example/webhooks/qubico/j1", SECRET)
TASK = orjson.loads((DATA / "create-response.json").read_bytes())


def envelope(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "data": None, "message": message}, status=status)


async def cut(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"content-length": "4000", "content-type": "application/json"})
    await resp.prepare(request)
    await resp.write(b'{"code": 200, "data": {"task_')
    assert request.transport is not None
    request.transport.close()
    return resp


async def slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response(TASK)


SEEN: list[tuple[dict[str, str], Any]] = []


def scripted(answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Callable[..., Any]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        SEEN.append((dict(request.headers), orjson.loads(body) if body else None))
        return await answer(request)

    return handler


BEHAVIOURS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "ok": lambda r: asyncio.sleep(0, web.json_response(TASK)),
    "bad": lambda r: asyncio.sleep(0, envelope(400, "input.image: not a URL")),
    "key": lambda r: asyncio.sleep(0, envelope(401, "invalid api key")),
    "credit": lambda r: asyncio.sleep(0, envelope(402, "insufficient credit")),
    "missing": lambda r: asyncio.sleep(0, envelope(404, "task not found")),
    "limited": lambda r: asyncio.sleep(
        0,
        web.json_response(
            {"code": 429, "data": None, "message": "slow down"}, status=429, headers={"retry-after": "7"}
        ),
    ),
    "limited-junk": lambda r: asyncio.sleep(0, web.Response(status=429, headers={"retry-after": "soon"})),
    "broken": lambda r: asyncio.sleep(0, envelope(503, "maintenance")),
    "error": lambda r: asyncio.sleep(0, envelope(500, "internal")),
    "garbage": lambda r: asyncio.sleep(0, web.Response(body=b"<html>oops</html>", content_type="text/html")),
    "no-task": lambda r: asyncio.sleep(0, web.json_response({"code": 200, "data": None, "message": "?"})),
    "cut": cut,
    "slow": slow,
    # HTTP 200 whose envelope says otherwise (public clients treat code != 200 as a failure).
    "200-bad": lambda r: asyncio.sleep(0, web.json_response({"code": 400, "data": None, "message": "bad image"})),
    "200-limited": lambda r: asyncio.sleep(0, web.json_response({"code": 429, "data": None, "message": "slow"})),
    "200-broken": lambda r: asyncio.sleep(0, web.json_response({"code": 500, "data": None, "message": "oops"})),
    "200-own-code": lambda r: asyncio.sleep(0, web.json_response({"code": 10000, "message": "busy"})),
    "cancel-documented": lambda r: asyncio.sleep(0, web.json_response({"code": 200, "message": "task t-1 canceled"})),
    "cancel-refused-200": lambda r: asyncio.sleep(
        0, web.json_response({"code": 400, "message": "task is processing, can not be canceled"})
    ),
}


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Callable[[str], Awaitable[UpstreamClient]]:
    clients: list[UpstreamClient] = []

    async def make(behaviour: str) -> UpstreamClient:
        app = web.Application()
        app.router.add_route("*", "/api/v1/task{tail:.*}", scripted(BEHAVIOURS[behaviour]))
        server = await aiohttp_server(app)
        client = UpstreamClient(str(server.make_url("")), KEY, timeouts=UpstreamTimeouts(connect_s=1, total_s=0.5))
        await client.start()
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for c in clients:
        await c.close()


async def test_create_sends_the_documented_body_and_key(upstream: Any) -> None:
    SEEN.clear()
    client = await upstream("ok")
    snap = await client.create_task(REQ)
    assert snap.task_id == TASK["data"]["task_id"]
    headers, body = SEEN[-1]
    assert headers["x-api-key"] == KEY
    assert body == REQ.to_json()
    assert body["config"]["webhook_config"] == {"endpoint": REQ.webhook_endpoint, "secret": SECRET}


@pytest.mark.parametrize(
    ("behaviour", "on_create", "on_get"),
    [
        ("bad", UpstreamRejected, UpstreamRejected),
        ("key", UpstreamRejected, UpstreamRejected),
        ("credit", UpstreamRejected, UpstreamRejected),
        ("missing", UpstreamNotFound, UpstreamNotFound),
        ("limited", UpstreamRateLimited, UpstreamRateLimited),
        ("broken", UpstreamTransient, UpstreamTransient),
        ("error", UpstreamTransient, UpstreamTransient),
        ("garbage", UpstreamAmbiguous, UpstreamTransient),
        ("no-task", UpstreamAmbiguous, UpstreamTransient),
        ("cut", UpstreamAmbiguous, UpstreamTransient),
        ("slow", UpstreamAmbiguous, UpstreamTransient),
        # An envelope error code is sorted like the HTTP status: a refused create never exists.
        ("200-bad", UpstreamRejected, UpstreamRejected),
        ("200-limited", UpstreamRateLimited, UpstreamRateLimited),
        ("200-broken", UpstreamTransient, UpstreamTransient),
        ("200-own-code", UpstreamTransient, UpstreamTransient),
    ],
)
async def test_each_failure_is_classified(upstream: Any, behaviour: str, on_create: type, on_get: type) -> None:
    client = await upstream(behaviour)
    with capture_logs() as logs:
        with pytest.raises(UpstreamError) as created:
            await client.create_task(REQ)
        with pytest.raises(UpstreamError) as got:
            await client.get_task("t-1")
    assert type(created.value) is on_create
    assert type(got.value) is on_get
    for text in (str(created.value), str(got.value), repr(logs)):
        assert KEY not in text and SECRET not in text


async def test_rate_limit_carries_retry_after(upstream: Any) -> None:
    with pytest.raises(UpstreamRateLimited) as err:
        await (await upstream("limited")).create_task(REQ)
    assert err.value.retry_after == 7.0
    with pytest.raises(UpstreamRateLimited) as junk:
        await (await upstream("limited-junk")).create_task(REQ)
    assert junk.value.retry_after is None


async def test_rejection_keeps_status_and_message(upstream: Any) -> None:
    with pytest.raises(UpstreamRejected) as err:
        await (await upstream("credit")).create_task(REQ)
    assert (err.value.status, err.value.message) == (402, "insufficient credit")


async def test_a_closed_port_is_transient_even_for_a_create() -> None:
    async with UpstreamClient("http://127.0.0.1:9", KEY, timeouts=UpstreamTimeouts(1, 1)) as client:
        with pytest.raises(UpstreamTransient, match="could not connect"):
            await client.create_task(REQ)


async def test_cancel_accepts_the_documented_answer_and_reports_refusals(upstream: Any) -> None:
    assert await (await upstream("cancel-documented")).cancel_task("t-1") == CancelAnswer(True, "task t-1 canceled")
    assert (await (await upstream("ok")).cancel_task("t-1")).accepted  # a task echoed back is fine too
    refused = await (await upstream("bad")).cancel_task("t-1")
    assert refused == CancelAnswer(False, "input.image: not a URL")
    in_envelope = await (await upstream("cancel-refused-200")).cancel_task("t-1")
    assert in_envelope == CancelAnswer(False, "task is processing, can not be canceled")
    assert not (await (await upstream("missing")).cancel_task("t-1")).accepted
    with pytest.raises(UpstreamTransient):
        await (await upstream("broken")).cancel_task("t-1")
    with pytest.raises(UpstreamRateLimited):
        await (await upstream("limited")).cancel_task("t-1")


# against the sandbox ---------------------------------------------------------------------------


async def test_create_get_cancel_against_the_sandbox(sandbox: Any) -> None:
    sb = await sandbox(latency_min_s=5.0, latency_max_s=5.0)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        created = await client.create_task(CreateRequest(sb.sample_url(), "car"))
        assert created.status is TaskStatus.PENDING
        got = await client.get_task(created.task_id)
        assert got.task_id == created.task_id and got.is_segment
        assert (await client.cancel_task(created.task_id)).accepted
        with pytest.raises(UpstreamNotFound):
            await client.get_task("00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"create_5xx": 1.0}, UpstreamTransient),
        ({"create_lost": 1.0}, UpstreamAmbiguous),
        ({"create_hold": 1.0, "create_hold_s": 3.0}, UpstreamAmbiguous),
        ({"burst_429": 1.0, "burst_429_retry_after_s": 2.0}, UpstreamRateLimited),
    ],
)
async def test_sandbox_create_faults_are_classified(sandbox: Any, fault: dict[str, float], expected: type) -> None:
    sb = await sandbox(**fault)
    async with UpstreamClient(sb.url, sb.api_key, timeouts=UpstreamTimeouts(1, 1)) as client:
        with pytest.raises(UpstreamError) as err:
            await client.create_task(CreateRequest(sb.sample_url(), "car"))
    assert type(err.value) is expected
    if expected is UpstreamRateLimited:
        assert err.value.retry_after == 2.0  # type: ignore[attr-defined]
    created = sb.engine.stats_json()["tasks_created"]
    assert created == (1 if expected is UpstreamAmbiguous else 0)  # ambiguous means: it may exist — it does


async def test_sandbox_get_fault_is_transient(sandbox: Any) -> None:
    sb = await sandbox()
    async with UpstreamClient(sb.url, sb.api_key) as client:
        created = await client.create_task(CreateRequest(sb.sample_url(), "car"))
        sb.engine.set_faults(get_5xx=1.0)
        with pytest.raises(UpstreamTransient):
            await client.get_task(created.task_id)
