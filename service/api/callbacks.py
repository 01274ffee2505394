"""Callback routes: subscriptions, signing keys, events, their deliveries, and replays."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import orjson
from starlette.responses import Response

from service.api.bodies import read_json
from service.api.endpoint import Call
from service.api.errors import ApiError, Problem, invalid, not_found
from service.api.fields import url_problem
from service.api.responses import json_response
from service.callback_events import EVENT_TYPES, rfc3339
from service.jobs import DeliveryAttemptRow, DeliveryRow, OutboxEvent, SubscriptionRow
from service.urlguard import callback_policy
from service.wakeup import Topic

_SUBSCRIPTION_FIELDS = frozenset({"url", "event_types", "ed25519"})


def subscription_view(call: Call, sub: SubscriptionRow) -> dict[str, Any]:
    signer = call.services.signer
    return {
        "id": sub.id,
        "url": sub.url,
        "event_types": list(sub.event_types) or list(EVENT_TYPES),
        "ed25519": sub.asymmetric,
        "created_at": rfc3339(sub.created_at),
        "disabled_at": rfc3339(sub.disabled_at),
        "disabled_reason": sub.disabled_reason,
        # Every current secret: receivers verify with any of them while keys rotate.
        "secrets": signer.secrets(sub.id),
        "public_keys": signer.public_keys(sub.id) if sub.asymmetric else [],
    }


def event_view(event: OutboxEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "batch_id": event.batch_id,
        "job_id": event.job_id,
        "created_at": rfc3339(event.created_at),
        "payload": orjson.loads(event.payload),
    }


def delivery_view(d: DeliveryRow, attempts: list[DeliveryAttemptRow] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": d.id,
        "event_id": d.event_id,
        "target": d.target,
        "url": d.url,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": rfc3339(d.next_at) if d.state == "pending" else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": rfc3339(d.created_at),
        "finished_at": rfc3339(d.finished_at),
    }
    if attempts is not None:
        view["attempt_log"] = [
            {
                "n": a.n,
                "at": rfc3339(a.at),
                "status": a.status,
                "duration_ms": round(a.duration_ms, 1),
                "error": a.error,
            }
            for a in attempts
        ]
    return view


async def create_subscription(call: Call) -> Response:
    """POST /v1/subscriptions: `{"url", "event_types"?, "ed25519"?}`; 201 with its secrets."""
    doc = await read_json(call.request, call.services.settings.max_request_body)
    if not isinstance(doc, dict):
        raise invalid([Problem("body", "must be a JSON object")])
    problems = [Problem(name, "unknown field") for name in sorted(set(doc) - _SUBSCRIPTION_FIELDS)]
    url = doc.get("url")
    if not isinstance(url, str):
        problems.append(Problem("url", "required, a string"))
    elif (reason := url_problem(url, callback_policy(call.services.settings))) is not None:
        problems.append(Problem("url", reason))
    types = doc.get("event_types", [])
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        problems.append(Problem("event_types", "must be a list of event types"))
    else:
        problems += [
            Problem(f"event_types[{i}]", f"unknown; one of {', '.join(EVENT_TYPES)}")
            for i, t in enumerate(types)
            if t not in EVENT_TYPES
        ]
    ed25519 = doc.get("ed25519", False)
    if not isinstance(ed25519, bool):
        problems.append(Problem("ed25519", "must be true or false"))
    if problems:
        raise invalid(problems)
    assert isinstance(url, str) and isinstance(types, list)
    sub = SubscriptionRow(
        f"sub_{uuid.uuid4().hex}", call.tenant, url, tuple(dict.fromkeys(types)), ed25519, time.time(), None, None
    )
    await call.services.store.add_subscription(sub)
    return json_response(subscription_view(call, sub), 201)


async def owned_subscription(call: Call) -> SubscriptionRow:
    sub = await call.services.store.get_subscription(call.request.path_params["sub_id"])
    if sub is None or sub.tenant != call.tenant:
        raise not_found("subscription")
    return sub


async def list_subscriptions(call: Call) -> Response:
    subs = await call.services.store.list_subscriptions(call.tenant)
    return json_response({"subscriptions": [subscription_view(call, s) for s in subs]})


async def get_subscription(call: Call) -> Response:
    return json_response(subscription_view(call, await owned_subscription(call)))


async def delete_subscription(call: Call) -> Response:
    """DELETE: disabled, not erased, so its past deliveries stay visible; pending ones stop."""
    sub = await owned_subscription(call)
    await call.services.store.delete_subscription(call.tenant, sub.id)
    return Response(status_code=204)


async def replay_subscription(call: Call) -> Response:
    """POST /v1/subscriptions/{id}/replay `{"since"}`: every dead delivery since then, again."""
    sub = await owned_subscription(call)
    if sub.disabled_at is not None:
        raise ApiError(409, "subscription_disabled", "the subscription is disabled")
    doc = await read_json(call.request, call.services.settings.max_request_body)
    since = _timestamp(doc.get("since") if isinstance(doc, dict) else None)
    count = await call.services.store.replay_subscription(sub.id, since=since, now=time.time())
    call.services.wakeup.notify(Topic.DELIVER)
    return json_response({"subscription_id": sub.id, "replayed": count})


async def callback_keys(call: Call) -> Response:
    """GET /v1/callback-keys: what verifies callbacks sent to a batch's `callback_url`."""
    owner = f"tenant:{call.tenant}"
    signer = call.services.signer
    return json_response({"secrets": signer.secrets(owner), "public_keys": signer.public_keys(owner)})


async def owned_event(call: Call) -> OutboxEvent:
    event = await call.services.store.get_event(call.request.path_params["event_id"])
    if event is None or event.tenant != call.tenant:
        raise not_found("event")
    return event


async def list_events(call: Call) -> Response:
    since = _timestamp(call.request.query_params.get("since"))
    events = await call.services.store.list_events(call.tenant, since=since, limit=500)
    return json_response({"events": [event_view(e) for e in events]})


async def event_deliveries(call: Call) -> Response:
    event = await owned_event(call)
    found = await call.services.store.event_deliveries(event.id)
    return json_response({"event": event_view(event), "deliveries": [delivery_view(d, a) for d, a in found]})


async def replay_event(call: Call) -> Response:
    event = await owned_event(call)
    count = await call.services.store.replay_event(event.id, now=time.time())
    call.services.wakeup.notify(Topic.DELIVER)
    return json_response({"event_id": event.id, "replayed": count})


async def dead_deliveries(call: Call) -> Response:
    found = await call.services.store.dead_deliveries(call.tenant, limit=500)
    return json_response({"deliveries": [delivery_view(d) for d in found]})


def _timestamp(raw: Any) -> float:
    """`since` as unix seconds or RFC 3339; absent means the beginning."""
    if raw is None or raw == "":
        return 0.0
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    raise invalid([Problem("since", "unix seconds or an RFC 3339 time")])
