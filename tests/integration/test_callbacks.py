"""Signed callbacks end to end: real receivers on 127.0.0.1 verify every signature with
independent implementations (`standardwebhooks` for v1, PyNaCl for v1a) through failures,
timeouts, 410s, outages and replays."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from nacl.signing import VerifyKey
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.job_actions import cancel
from service.jobs import JobInput, SubscriptionRow
from service.serving import serve_in_loop
from service.urlguard import is_public
from service.wakeup import Topic
from tests.fixtures.segflow import TENANT_KEYS, RunningSegflow
from tests.integration.test_flow import submit

FAST = {"callback_retry_schedule_s": (0.2, 0.2, 0.2), "callback_timeout_s": 1.0, "callback_interval_s": 0.1}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; `answer(path, webhook_id, nth)` picks the status (or None to hang)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answer: Callable[[str, str, int], int | None] = lambda path, msg_id, nth: 200
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    reply_headers: dict[str, str] = field(default_factory=dict)  # sent with every answer

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        msg_id = request.headers.get("webhook-id", "")
        self.seen[(path, msg_id)] += 1
        self.received.append(Received(path, dict(request.headers), await request.body()))
        status = self.answer(path, msg_id, self.seen[(path, msg_id)])
        if status is None:
            await self.release.wait()  # hang past segflow's timeout
            status = 200
        return Response(status_code=status, headers=self.reply_headers)

    def ok(self, path: str) -> list[Received]:
        """The distinct messages a path received (duplicates share a webhook-id)."""
        first: dict[str, Received] = {}
        for r in self.received:
            if r.path == path:
                first.setdefault(r.headers["webhook-id"], r)
        return list(first.values())

    async def wait(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, f"receiver saw {len(self.received)} requests"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def serving(r: Receiver) -> AsyncIterator[Receiver]:
    """`r` on its own port (its own origin)."""
    async with serve_in_loop(Starlette(routes=[Route("/{path:path}", r.handle, methods=["POST"])])) as url:
        r.url = url
        try:
            yield r
        finally:
            r.release.set()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as r:
        yield r


async def api(sf: RunningSegflow, method: str, path: str, body: Any = None, tenant: str = "acme") -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {TENANT_KEYS[tenant]}"}
    async with aiohttp.ClientSession() as http, http.request(method, sf.url + path, json=body, headers=headers) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None


def verify_v1(secret: str, r: Received) -> None:
    Webhook(secret).verify(r.body, r.headers)


def verify_v1a(public_key: str, r: Received) -> None:
    content = f"{r.headers['webhook-id']}.{r.headers['webhook-timestamp']}.".encode() + r.body
    sigs = [s.removeprefix("v1a,") for s in r.headers["webhook-signature"].split() if s.startswith("v1a,")]
    assert sigs, "no v1a signature"
    VerifyKey(base64.b64decode(public_key.removeprefix("whpk_"))).verify(content, base64.b64decode(sigs[0]))


async def test_batch_callback_gets_one_verified_event_per_job_and_one_batch_completed(
    sandbox: Any, segflow: Any, receiver: Receiver
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, **FAST)
    items = [{"image": sb.sample_url(), "prompt": f"p{i}"} for i in range(8)]
    answer = await sf.client.create_batch(items, callback_url=f"{receiver.url}/hook")
    await receiver.wait(lambda: len(receiver.ok("/hook")) == 9)
    _, keys = await api(sf, "GET", "/v1/callback-keys")
    events = receiver.ok("/hook")
    for r in events:
        verify_v1(keys["secrets"][0], r)
        assert r.json["id"] == r.headers["webhook-id"]
    types = Counter(r.json["type"] for r in events)
    assert types == {"job.succeeded": 8, "batch.completed": 1}
    assert {r.json["data"]["job_id"] for r in events if r.json["type"] == "job.succeeded"} == {
        j["job_id"] for j in answer["jobs"]
    }
    done = next(r.json["data"] for r in events if r.json["type"] == "batch.completed")
    assert (done["batch_id"], done["total"], done["counts"]) == (answer["batch_id"], 8, {"succeeded": 8})


async def test_subscription_gets_only_its_types_signed_with_ed25519_too(
    sandbox: Any, segflow: Any, receiver: Receiver
) -> None:
    from service.sandbox.settings import FaultSettings

    sb = await sandbox(faults=FaultSettings(task_fail=1.0))
    sf = await segflow(sb.url, **FAST)
    status, sub = await api(
        sf, "POST", "/v1/subscriptions", {"url": f"{receiver.url}/sub", "event_types": ["job.failed"], "ed25519": True}
    )
    assert status == 201 and sub["secrets"][0].startswith("whsec_") and sub["public_keys"][0].startswith("whpk_")
    await submit(sf, sb, 3)
    await receiver.wait(lambda: len(receiver.ok("/sub")) == 3)
    for r in receiver.ok("/sub"):
        assert r.json["type"] == "job.failed" and r.json["data"]["error"]["code"] == "upstream_failed"
        verify_v1(sub["secrets"][0], r)
        verify_v1a(sub["public_keys"][0], r)
    # Other tenants see neither the subscription nor the events.
    assert (await api(sf, "GET", f"/v1/subscriptions/{sub['id']}", tenant="globex"))[0] == 404
    assert (await api(sf, "GET", "/v1/events", tenant="globex"))[1]["events"] == []


async def test_failures_are_retried_with_the_same_id_and_every_attempt_is_visible(
    sandbox: Any, segflow: Any, receiver: Receiver
) -> None:
    receiver.answer = lambda path, msg_id, nth: 500 if nth <= 2 else 200
    sb = await sandbox()
    sf = await segflow(sb.url, **FAST)
    await sf.client.create_batch([{"image": sb.sample_url(), "prompt": "car"}], callback_url=f"{receiver.url}/hook")
    await receiver.wait(lambda: len(receiver.ok("/hook")) == 2 and len(receiver.received) == 6)
    assert set(Counter(r.headers["webhook-id"] for r in receiver.received).values()) == {3}
    event_id = receiver.ok("/hook")[0].headers["webhook-id"]
    _, found = await api(sf, "GET", f"/v1/events/{event_id}/deliveries")
    await asyncio.sleep(0)  # the last attempt's record is written right after the 200
    deadline = asyncio.get_running_loop().time() + 5
    while found["deliveries"][0]["state"] != "delivered":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
        _, found = await api(sf, "GET", f"/v1/events/{event_id}/deliveries")
    [d] = found["deliveries"]
    assert [a["status"] for a in d["attempt_log"]] == [500, 500, 200]
    assert all(a["duration_ms"] >= 0 for a in d["attempt_log"])


async def test_timeouts_dead_letter_then_replay_delivers(sandbox: Any, segflow: Any, receiver: Receiver) -> None:
    receiver.answer = lambda path, msg_id, nth: None  # hangs
    sb = await sandbox()
    sf = await segflow(sb.url, callback_retry_schedule_s=(0.1,), callback_timeout_s=0.3, callback_interval_s=0.1)
    await sf.client.create_batch([{"image": sb.sample_url(), "prompt": "car"}], callback_url=f"{receiver.url}/hook")
    deadline = asyncio.get_running_loop().time() + 30
    while len((await api(sf, "GET", "/v1/deliveries/dead"))[1]["deliveries"]) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    dead = (await api(sf, "GET", "/v1/deliveries/dead"))[1]["deliveries"]
    assert all(d["attempts"] == 2 and "Timeout" in (d["last_error"] or "") for d in dead)
    receiver.answer = lambda path, msg_id, nth: 200
    receiver.release.set()
    before = len(receiver.received)
    for d in dead:
        status, body = await api(sf, "POST", f"/v1/events/{d['event_id']}/replay")
        assert (status, body["replayed"]) == (200, 1)
    await receiver.wait(
        lambda: {r.headers["webhook-id"] for r in receiver.received[before:]} >= {d["event_id"] for d in dead}
    )


async def test_410_gone_disables_the_subscription(sandbox: Any, segflow: Any, receiver: Receiver) -> None:
    receiver.answer = lambda path, msg_id, nth: 410
    sb = await sandbox()
    sf = await segflow(sb.url, **FAST)
    _, sub = await api(sf, "POST", "/v1/subscriptions", {"url": f"{receiver.url}/gone"})
    await submit(sf, sb, 2)
    deadline = asyncio.get_running_loop().time() + 30
    while (await api(sf, "GET", f"/v1/subscriptions/{sub['id']}"))[1]["disabled_at"] is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    _, after = await api(sf, "GET", f"/v1/subscriptions/{sub['id']}")
    assert "410" in after["disabled_reason"]
    _, told = await api(sf, "GET", "/v1/events?type=subscription.disabled")
    assert [e["payload"]["data"]["subscription_id"] for e in told["events"]] == [sub["id"]]
    requests = len(receiver.received)
    await submit(sf, sb, 2)  # a disabled subscription gets nothing more
    await asyncio.sleep(0)
    assert len([r for r in receiver.received[requests:] if r.path == "/gone"]) <= 1


async def test_a_receiver_down_for_a_while_gets_everything_when_back(
    sandbox: Any, segflow: Any, receiver: Receiver
) -> None:
    down = {"on": True}
    receiver.answer = lambda path, msg_id, nth: 503 if down["on"] else 200
    sb = await sandbox()
    sf = await segflow(sb.url, callback_retry_schedule_s=(0.2,) * 30, callback_interval_s=0.1)
    await sf.client.create_batch(
        [{"image": sb.sample_url(), "prompt": f"p{i}"} for i in range(4)], callback_url=f"{receiver.url}/hook"
    )
    await receiver.wait(lambda: len(receiver.received) >= 10)  # several failed rounds
    down["on"] = False
    flipped = len(receiver.received)
    _, keys = await api(sf, "GET", "/v1/callback-keys")
    await receiver.wait(lambda: len({r.headers["webhook-id"] for r in receiver.received[flipped:]}) == 5)
    for r in receiver.ok("/hook"):
        verify_v1(keys["secrets"][0], r)


async def test_a_slow_endpoint_does_not_hold_up_another(sandbox: Any, segflow: Any, receiver: Receiver) -> None:
    receiver.answer = lambda path, msg_id, nth: None  # hangs
    sb = await sandbox()
    sf = await segflow(sb.url, callback_per_endpoint=1, callback_timeout_s=30.0, callback_interval_s=0.1)
    async with serving(Receiver()) as fast:
        await api(sf, "POST", "/v1/subscriptions", {"url": f"{receiver.url}/slow"})
        await api(sf, "POST", "/v1/subscriptions", {"url": f"{fast.url}/fast"})
        await submit(sf, sb, 6)
        await fast.wait(lambda: len(fast.ok("/fast")) == 7)  # 6 jobs + batch.completed
        assert len(receiver.received) == 1  # one at a time, still hanging


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest",
        "https://10.0.0.5/x",
        "ftp://example.com/x",
    ],
)
async def test_private_or_plain_http_subscription_urls_are_refused_in_production(segflow: Any, url: str) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=(), allow_private_image_urls=False)
    status, body = await api(sf, "POST", "/v1/subscriptions", {"url": url})
    assert status == 422 and body["detail"][0]["path"] == "url"
    assert (await api(sf, "GET", "/v1/subscriptions"))[1]["subscriptions"] == []


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time(
    segflow: Any, receiver: Receiver
) -> None:
    host = socket.gethostname()
    address = socket.getaddrinfo(host, 443)[0][4][0]
    if is_public(address):
        pytest.skip(f"this machine's name resolves to a public address ({address})")
    port = receiver.url.rsplit(":", 1)[1]
    sf = await segflow(
        "http://127.0.0.1:9",
        roles=("deliverer",),
        allow_private_image_urls=False,
        callback_retry_schedule_s=(),
        callback_interval_s=0.1,
    )
    # Stored directly: the API would accept this https name, and only DNS says where it points.
    await sf.store.add_subscription(
        SubscriptionRow("sub_dns", "acme", f"https://{host}:{port}/dns", (), False, 0.0, None, None)
    )
    _, jobs, _ = await sf.store.create_batch(
        "acme",
        [JobInput("https://img.example/a.png", "car")],
        callback_url=None,
        idempotency_key=None,
        request_hash="h",
        now=0.0,
    )
    await sf.store.transition(jobs[0].id, cancel)
    sf.services.wakeup.notify(Topic.DELIVER)
    deadline = asyncio.get_running_loop().time() + 20
    while not (dead := (await api(sf, "GET", "/v1/deliveries/dead"))[1]["deliveries"]):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert "private" in dead[0]["last_error"]
    assert receiver.received == []  # nothing ever reached the address behind the name


async def test_replaying_a_subscription_redelivers_its_dead_events_since_a_time(
    sandbox: Any, segflow: Any, receiver: Receiver
) -> None:
    failing = {"on": True}
    receiver.answer = lambda path, msg_id, nth: 500 if failing["on"] else 200
    sb = await sandbox()
    sf = await segflow(sb.url, callback_retry_schedule_s=(0.1,), callback_interval_s=0.1)
    _, sub = await api(sf, "POST", "/v1/subscriptions", {"url": f"{receiver.url}/sub"})
    await submit(sf, sb, 2)
    deadline = asyncio.get_running_loop().time() + 30
    while len((await api(sf, "GET", "/v1/deliveries/dead"))[1]["deliveries"]) < 3:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    failing["on"] = False
    status, body = await api(sf, "POST", f"/v1/subscriptions/{sub['id']}/replay", {"since": "2000-01-01T00:00:00Z"})
    assert (status, body["replayed"]) == (200, 3)
    await receiver.wait(lambda: len({r.headers["webhook-id"] for r in receiver.received[-3:]}) == 3)
    while (await api(sf, "GET", "/v1/deliveries/dead"))[1]["deliveries"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
