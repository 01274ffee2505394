"""Delivery etiquette and the event catalogue, with segflow's real deliverer and receivers on
127.0.0.1: Retry-After and slow-downs are honoured, a subscription failing for too long is
disabled (and says so), subscriptions can be changed, paused and given a new secret, test events
are sent on request, and every delivered body matches its schema in the OpenAPI `webhooks`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jsonschema_rs
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service.api.catalogue import envelope_name
from service.api.openapi import document
from service.callback_events import EVENT_TYPES
from tests.adversarial.test_callback_amplification import cancelled_job
from tests.fixtures.api import Api, api_on
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import Starter
from tests.integration.test_callbacks import Receiver, serving

QUICK = {"callback_retry_schedule_s": (0.1,) * 10, "callback_timeout_s": 5.0, "callback_interval_s": 0.05}


def check_against_catalogue(body: bytes | Any) -> None:
    """The body validates against its type's schema in the served document's `webhooks`."""
    doc = document()
    payload = body if isinstance(body, dict) else json.loads(body)
    schema = {"components": doc["components"], "$ref": f"#/components/schemas/{envelope_name(payload['type'])}"}
    errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(payload)]
    assert not errors, (payload["type"], errors)


async def started(segflow: Starter, **settings: Any) -> Any:
    return await segflow("http://127.0.0.1:9", roles=("deliverer",), **(QUICK | settings))


def attempts_at(receiver: Receiver, path: str) -> list[float]:
    return [r.at for r in receiver.received if r.path == path]


async def test_retry_after_on_429_is_honoured(segflow: Starter) -> None:
    async with serving(Receiver()) as receiver:
        receiver.answer = lambda path, msg_id, nth: 429 if nth == 1 else 200
        receiver.reply_headers = {"retry-after": "1"}
        app = await started(segflow)
        async with api_on(app) as api:
            await api.call(
                "POST", "/v1/subscriptions", json={"url": f"{receiver.url}/h", "event_types": ["job.cancelled"]}
            )
            await cancelled_job(api)
            await wait_until(lambda: len(receiver.received) == 2, 15, "the retry")
            first, second = attempts_at(receiver, "/h")
            assert second - first >= 0.95  # the schedule alone says 0.1 s


async def test_a_retry_after_past_the_bound_is_capped(segflow: Starter) -> None:
    async with serving(Receiver()) as receiver:
        receiver.answer = lambda path, msg_id, nth: 503 if nth == 1 else 200
        receiver.reply_headers = {"retry-after": "86400"}
        app = await started(segflow, callback_retry_after_max_s=0.5, callback_slow_down_max_s=0.5)
        async with api_on(app) as api:
            await api.call(
                "POST", "/v1/subscriptions", json={"url": f"{receiver.url}/h", "event_types": ["job.cancelled"]}
            )
            await cancelled_job(api)
            await wait_until(lambda: len(receiver.received) == 2, 10, "the capped retry")


async def test_an_endpoint_answering_502_is_left_alone_for_a_while(segflow: Starter) -> None:
    """Its other deliveries wait too (the whole origin slows down), doubling while it goes on."""
    async with serving(Receiver()) as receiver:
        receiver.answer = lambda path, msg_id, nth: 502 if len(receiver.received) <= 2 else 200
        app = await started(segflow, callback_slow_down_s=1.0, callback_slow_down_max_s=10.0, callback_per_endpoint=8)
        async with api_on(app) as api:
            await api.call("POST", "/v1/subscriptions", json={"url": f"{receiver.url}/a"})
            await cancelled_job(api)  # two events: job.cancelled, batch.completed
            await wait_until(lambda: len(receiver.received) >= 4, 20, "both delivered")
            times = [r.at for r in receiver.received]
            assert times[2] - times[1] >= 0.9  # after the second 502, nothing for a second (or two)
            state = {r.headers["webhook-id"] for r in receiver.received[2:]}
            assert len(state) == 2


async def test_a_subscription_failing_too_long_is_disabled_with_an_event_and_a_metric(segflow: Starter) -> None:
    async with serving(Receiver()) as bad, serving(Receiver()) as watcher:
        bad.answer = lambda path, msg_id, nth: 500
        app = await started(segflow, callback_disable_after_s=0.5)
        async with api_on(app) as api:
            failing = (await api.call("POST", "/v1/subscriptions", json={"url": f"{bad.url}/x"})).body
            ops = {"url": f"{watcher.url}/ops", "event_types": ["subscription.disabled"]}
            assert (await api.call("POST", "/v1/subscriptions", json=ops)).status == 201
            await cancelled_job(api)

            async def disabled() -> bool:
                return (await api.call("GET", f"/v1/subscriptions/{failing['id']}")).body["disabled_at"] is not None

            await wait_until(disabled, 15, "the subscription disabled")
            sub = (await api.call("GET", f"/v1/subscriptions/{failing['id']}")).body
            assert sub["disabled_reason"].startswith("failing for") and sub["failing_since"] is not None
            events = (await api.call("GET", "/v1/events?type=subscription.disabled")).body["events"]
            assert [e["payload"]["data"]["subscription_id"] for e in events] == [failing["id"]]
            await wait_until(lambda: len(watcher.received) == 1, 10, "the operational event delivered")
            check_against_catalogue(watcher.received[0].json)
            ops_secret = (await api.call("GET", "/v1/subscriptions")).body["subscriptions"][1]["secrets"][0]
            Webhook(ops_secret).verify(watcher.received[0].body, watcher.received[0].headers)
            metrics = (await api.call("GET", "/metrics", tenant=None)).raw.decode()
            assert 'segflow_subscriptions_disabled_total{reason="failing"} 1.0' in metrics
            later = await cancelled_job(api)
            await asyncio.sleep(0.3)
            assert later not in {r.headers["webhook-id"] for r in bad.received}  # nothing new to it


async def test_patch_pauses_changes_types_and_moves_the_url(segflow: Starter) -> None:
    async with serving(Receiver()) as old, serving(Receiver()) as new:
        app = await started(segflow)
        async with api_on(app) as api:
            sub = (await api.call("POST", "/v1/subscriptions", json={"url": f"{old.url}/o"})).body
            paused = await api.call("PATCH", f"/v1/subscriptions/{sub['id']}", json={"paused": True})
            assert paused.status == 200 and paused.body["paused"] is True
            await cancelled_job(api)
            await asyncio.sleep(0.4)
            assert old.received == []  # queued, not sent
            moved = await api.call(
                "PATCH",
                f"/v1/subscriptions/{sub['id']}",
                json={"paused": False, "url": f"{new.url}/n", "event_types": ["job.cancelled"]},
            )
            assert moved.body["url"] == f"{new.url}/n" and moved.body["event_types"] == ["job.cancelled"]
            await wait_until(lambda: len(new.received) == 2, 10, "the queued events at the new URL")
            await cancelled_job(api)  # only job.cancelled from now on
            await wait_until(lambda: len(new.received) == 3, 10, "the next event")
            assert new.received[2].json["type"] == "job.cancelled" and old.received == []
            refused = await api.call("PATCH", f"/v1/subscriptions/{sub['id']}", json={"paused": "yes", "nope": 1})
            assert refused.status == 422 and set(refused.paths) == {"paused", "nope"}


async def test_rotating_a_secret_signs_with_both_during_the_overlap(segflow: Starter) -> None:
    async with serving(Receiver()) as receiver:
        app = await started(segflow)
        async with api_on(app) as api:
            sub = (await api.call("POST", "/v1/subscriptions", json={"url": f"{receiver.url}/r"})).body
            [old_secret] = sub["secrets"]
            rotated = (
                await api.call("POST", f"/v1/subscriptions/{sub['id']}/rotate-secret", json={"overlap_s": 60})
            ).body
            new_secret = rotated["secrets"][0]
            assert rotated["secrets"] == [new_secret, old_secret] and new_secret != old_secret
            assert rotated["previous_secret_expires_at"] is not None
            await api.call("POST", f"/v1/subscriptions/{sub['id']}/test", json={"type": "job.failed"})
            await wait_until(lambda: len(receiver.received) == 1, 10, "a delivery")
            for secret in (old_secret, new_secret):  # a receiver with either verifies
                Webhook(secret).verify(receiver.received[0].body, receiver.received[0].headers)
            # Without an overlap only the new secret signs.
            now = (await api.call("POST", f"/v1/subscriptions/{sub['id']}/rotate-secret", json={"overlap_s": 0})).body
            assert len(now["secrets"]) == 1
            await api.call("POST", f"/v1/subscriptions/{sub['id']}/test", json={"type": "job.failed"})
            await wait_until(lambda: len(receiver.received) == 2, 10, "a second delivery")
            Webhook(now["secrets"][0]).verify(receiver.received[1].body, receiver.received[1].headers)
            with pytest.raises(WebhookVerificationError):
                Webhook(new_secret).verify(receiver.received[1].body, receiver.received[1].headers)


async def test_test_events_of_every_type_arrive_signed_and_match_the_catalogue(segflow: Starter) -> None:
    async with serving(Receiver()) as receiver:
        app = await started(segflow)
        async with api_on(app) as api:
            sub = (await api.call("POST", "/v1/subscriptions", json={"url": f"{receiver.url}/t", "ed25519": True})).body
            for kind in EVENT_TYPES:
                sent = await api.call("POST", f"/v1/subscriptions/{sub['id']}/test", json={"type": kind})
                assert sent.status == 202 and sent.body["event_id"].startswith("evt_test_")
            await wait_until(lambda: len(receiver.received) == len(EVENT_TYPES), 10, "every test event")
            assert sorted(r.json["type"] for r in receiver.received) == sorted(EVENT_TYPES)
            for r in receiver.received:
                Webhook(sub["secrets"][0]).verify(r.body, r.headers)
                check_against_catalogue(r.json)
            bad = await api.call("POST", f"/v1/subscriptions/{sub['id']}/test", json={"type": "job.exploded"})
            assert bad.status == 422 and bad.paths == ["type"]


async def test_real_job_and_batch_events_match_the_catalogue(sandbox: Any, segflow: Starter) -> None:
    from service.sandbox.settings import FaultSettings
    from tests.integration.test_flow import submit

    sb = await sandbox(faults=FaultSettings(task_fail=0.5), seed=3)
    async with serving(Receiver()) as receiver:
        sf = await segflow(sb.url, **QUICK)
        async with api_on(sf) as api:
            await api.call("POST", "/v1/subscriptions", json={"url": f"{receiver.url}/all"})
            await submit(sf, sb, 6)
            await wait_until(lambda: any(r.json["type"] == "batch.completed" for r in receiver.received), 30, "done")
    types = {r.json["type"] for r in receiver.received}
    assert {"job.succeeded", "job.failed", "batch.completed"} <= types, types
    for r in receiver.received:
        check_against_catalogue(r.json)


async def test_events_page_newest_first_without_skipping_or_repeating_ties(segflow: Starter) -> None:
    app = await segflow("http://127.0.0.1:9", roles=())
    async with api_on(app) as api:
        await many_events_at_one_instant(api, 7)
        seen: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = (await api.call("GET", f"/v1/events?limit=3&cursor={cursor}")).body
            seen += page["events"]
            if not page["next_cursor"]:
                break
            cursor = page["next_cursor"]
        ids = [e["id"] for e in seen]
        assert len(ids) == len(set(ids)) == 8  # the seven tied and the older one, none twice
        keys = [(e["created_at"], e["id"]) for e in seen]
        assert keys == sorted(keys, reverse=True)
        only = (await api.call("GET", "/v1/events?type=job.failed&limit=500")).body["events"]
        assert {e["type"] for e in only} == {"job.failed"} and len(only) == 4
        assert (await api.call("GET", "/v1/events?type=nope")).status == 422
        assert (await api.call("GET", "/v1/events?cursor=not-a-cursor")).status in (400, 422)


async def many_events_at_one_instant(api: Api, n: int) -> None:
    """`n` test events with the very same created_at (ties), and one older event."""
    from service.callback_events import sample_event

    sub = (await api.call("POST", "/v1/subscriptions", json={"url": "https://hooks.example.com/x"})).body
    row = await api.services.store.get_subscription(sub["id"])
    instant = time.time()
    await api.services.store.add_test_event(
        sample_event("acme", "batch.completed", instant - 60), row, now=instant - 60
    )
    for i in range(n):
        kind = "job.failed" if i % 2 == 0 else "job.succeeded"
        await api.services.store.add_test_event(sample_event("acme", kind, instant), row, now=instant)
