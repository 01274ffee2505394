"""Callback amplification (issue 13, finding 4), tried as an attacker would against a live segflow
with a real deliverer and real receivers on 127.0.0.1: a tenant cannot multiply deliveries with
many subscriptions, with URL spellings of one endpoint, or with replays of delivered events."""

from __future__ import annotations

import asyncio

from service.job_actions import cancel
from tests.fixtures.api import IMAGE, Api, api_on
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import Starter
from tests.integration.test_callbacks import Receiver, serving

FAST = {"callback_retry_schedule_s": (0.2, 0.2), "callback_timeout_s": 30.0, "callback_interval_s": 0.05}


async def test_a_tenant_cannot_create_more_subscriptions_than_the_limit(segflow: Starter) -> None:
    app = await segflow("http://127.0.0.1:9", roles=(), callback_max_subscriptions=3)
    async with api_on(app) as api:
        made = [
            await api.call("POST", "/v1/subscriptions", json={"url": f"https://h{i}.example.com/"}) for i in range(4)
        ]
        assert [a.status for a in made] == [201, 201, 201, 409]
        assert made[3].error == "too_many_subscriptions"
        assert len((await api.call("GET", "/v1/subscriptions")).body["subscriptions"]) == 3
        # Another tenant has its own allowance; deleting one frees a place.
        assert (
            await api.call("POST", "/v1/subscriptions", tenant="globex", json={"url": "https://g.example.com/"})
        ).status == 201
        assert (await api.call("DELETE", f"/v1/subscriptions/{made[0].body['id']}")).status == 204
        assert (await api.call("POST", "/v1/subscriptions", json={"url": "https://h5.example.com/"})).status == 201


async def test_spellings_of_one_endpoint_share_its_per_endpoint_limit(segflow: Starter) -> None:
    """`?i=1`, `?i=2`, another path, an upper-case host and scheme: one origin, one slot."""
    async with serving(Receiver()) as receiver:
        receiver.answer = lambda path, msg_id, nth: None  # hang: every delivery holds its slot
        host, port = receiver.url.removeprefix("http://").split(":")
        spellings = [
            f"{receiver.url}/hook?i=1",
            f"{receiver.url}/hook?i=2",
            f"{receiver.url}/other",
            f"HTTP://{host.upper()}:{port}/x#frag",
        ]
        app = await segflow("http://127.0.0.1:9", roles=("deliverer",), callback_per_endpoint=1, **FAST)
        async with api_on(app) as api:
            for url in spellings:
                assert (await api.call("POST", "/v1/subscriptions", json={"url": url})).status == 201
            await cancelled_job(api)
            await wait_until(lambda: len(receiver.received) >= 1, 10, "a first delivery")
            await asyncio.sleep(0.5)  # many deliverer rounds (interval 0.05 s) to try the others
            assert len(receiver.received) == 1, [r.path for r in receiver.received]


async def test_replaying_a_delivered_event_sends_nothing_unless_asked_for_all(segflow: Starter) -> None:
    async with serving(Receiver()) as receiver:
        app = await segflow("http://127.0.0.1:9", roles=("deliverer",), **FAST)
        async with api_on(app) as api:
            for i in range(3):
                await api.call("POST", "/v1/subscriptions", json={"url": f"{receiver.url}/s{i}"})
            event_id = await cancelled_job(api)  # job.cancelled and batch.completed, to each of 3
            await wait_until(lambda: len(receiver.received) == 6, 10, "six deliveries")
            replay = await api.call("POST", f"/v1/events/{event_id}/replay")
            assert (replay.status, replay.body["replayed"]) == (200, 0)
            sub_id = (await api.call("GET", "/v1/subscriptions")).body["subscriptions"][0]["id"]
            again = await api.call("POST", f"/v1/subscriptions/{sub_id}/replay", json={"since": 0})
            assert (again.status, again.body["replayed"]) == (200, 0)
            await asyncio.sleep(0.5)
            assert len(receiver.received) == 6  # nothing was sent again
            everything = await api.call("POST", f"/v1/events/{event_id}/replay", json={"all": True})
            assert (everything.status, everything.body["replayed"]) == (200, 3)
            await wait_until(lambda: len(receiver.received) == 9, 10, "the asked-for redelivery")
            assert {r.headers["webhook-id"] for r in receiver.received[6:]} == {event_id}


async def test_replays_are_rate_limited_per_tenant(segflow: Starter) -> None:
    app = await segflow("http://127.0.0.1:9", roles=(), callback_replays_per_minute=2)
    async with api_on(app) as api:
        event_id = await cancelled_job(api)
        answers = [await api.call("POST", f"/v1/events/{event_id}/replay") for _ in range(3)]
        assert [a.status for a in answers] == [200, 200, 429]
        assert answers[2].error == "quota_exceeded" and int(answers[2].headers["retry-after"]) >= 1
        assert answers[2].body["detail"] == [{"quota": "replays_per_minute", "limit": 2}]
        other = await cancelled_job(api, tenant="globex")
        assert (await api.call("POST", f"/v1/events/{other}/replay", tenant="globex")).status == 200


async def cancelled_job(api: Api, tenant: str = "acme") -> str:
    """A job cancelled through the store (an event, fanned out to the tenant's subscriptions)."""
    batch = await api.submit({"items": [{"image": IMAGE, "prompt": "car"}]}, tenant=tenant)
    await api.services.store.transition(batch["jobs"][0]["job_id"], cancel)
    events = (await api.call("GET", "/v1/events?type=job.cancelled", tenant=tenant)).body["events"]
    return str(events[0]["id"])
