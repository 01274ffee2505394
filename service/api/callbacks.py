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
from service.api.listing import encode_event_cursor, parse_event_listing
from service.api.responses import json_response
from service.callback_events import EVENT_TYPES, rfc3339, sample_event
from service.jobs import DeliveryAttemptRow, DeliveryRow, OutboxEvent, SubscriptionChanges, SubscriptionRow
from service.quotas import charge_replay
from service.signing import subscription_owners
from service.urlguard import callback_policy
from service.wakeup import Topic

_SUBSCRIPTION_FIELDS = frozenset({"url", "event_types", "ed25519"})
_PATCH_FIELDS = frozenset({"url", "event_types", "paused"})
MAX_OVERLAP_S = 7 * 86400.0


def subscription_view(call: Call, sub: SubscriptionRow) -> dict[str, Any]:
    signer = call.services.signer
    owners = subscription_owners(sub.id, sub.secret_version, sub.previous_secret_until, time.time())
    overlap = sub.previous_secret_until if len(owners) > 1 else None
    return {
        "id": sub.id,
        "url": sub.url,
        "event_types": list(sub.event_types) or list(EVENT_TYPES),
        "ed25519": sub.asymmetric,
        "paused": sub.paused,
        "created_at": rfc3339(sub.created_at),
        "disabled_at": rfc3339(sub.disabled_at),
        "disabled_reason": sub.disabled_reason,
        "failing_since": rfc3339(sub.failing_since),
        # Every secret that signs now, newest first: receivers verify with any of them while
        # master keys or this subscription's own secret rotate.
        "secrets": signer.secrets(owners),
        "public_keys": signer.public_keys(owners) if sub.asymmetric else [],
        "previous_secret_expires_at": rfc3339(overlap),
    }


def event_view(event: OutboxEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "batch_id": event.batch_id or None,
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
    problems += _url_problems(call, url)
    types = doc.get("event_types", [])
    problems += _type_problems(types)
    ed25519 = doc.get("ed25519", False)
    if not isinstance(ed25519, bool):
        problems.append(Problem("ed25519", "must be true or false"))
    if problems:
        raise invalid(problems)
    assert isinstance(url, str) and isinstance(types, list)
    settings = call.services.settings
    sub = SubscriptionRow(
        f"sub_{uuid.uuid4().hex}", call.tenant, url, tuple(dict.fromkeys(types)), ed25519, time.time(), None, None
    )
    limit = settings.callback_max_subscriptions
    if not await call.services.store.add_subscription(sub, max_per_tenant=limit):
        raise ApiError(
            409, "too_many_subscriptions", f"this tenant already has {limit} subscriptions; delete one first"
        )
    return json_response(subscription_view(call, sub), 201)


def _url_problems(call: Call, url: Any) -> list[Problem]:
    if not isinstance(url, str):
        return [Problem("url", "required, a string")]
    reason = url_problem(url, callback_policy(call.services.settings))
    return [] if reason is None else [Problem("url", reason)]


def _type_problems(types: Any) -> list[Problem]:
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        return [Problem("event_types", "must be a list of event types")]
    return [
        Problem(f"event_types[{i}]", f"unknown; one of {', '.join(EVENT_TYPES)}")
        for i, t in enumerate(types)
        if t not in EVENT_TYPES
    ]


async def update_subscription(call: Call) -> Response:
    """PATCH /v1/subscriptions/{id}: `{"url"?, "event_types"?, "paused"?}`. A paused subscription
    keeps its events queued and gets them once unpaused; a new URL also gets the pending ones."""
    sub = await owned_subscription(call)
    doc = await read_json(call.request, call.services.settings.max_request_body)
    if not isinstance(doc, dict):
        raise invalid([Problem("body", "must be a JSON object")])
    problems = [Problem(name, "unknown field") for name in sorted(set(doc) - _PATCH_FIELDS)]
    if "url" in doc:
        problems += _url_problems(call, doc["url"])
    if "event_types" in doc:
        problems += _type_problems(doc["event_types"])
    if "paused" in doc and not isinstance(doc["paused"], bool):
        problems.append(Problem("paused", "must be true or false"))
    if problems:
        raise invalid(problems)
    if sub.disabled_at is not None:
        raise ApiError(409, "subscription_disabled", "the subscription is disabled")
    changes = SubscriptionChanges(
        url=doc.get("url"),
        event_types=tuple(dict.fromkeys(doc["event_types"])) if "event_types" in doc else None,
        paused=doc.get("paused"),
    )
    updated = await call.services.store.update_subscription(sub.id, changes)
    assert updated is not None
    if changes.paused is False or changes.url is not None:
        call.services.wakeup.notify(Topic.DELIVER)
    return json_response(subscription_view(call, updated))


async def rotate_secret(call: Call) -> Response:
    """POST /v1/subscriptions/{id}/rotate-secret `{"overlap_s"?}`: a new secret signs from now
    on; the previous one signs too until the overlap ends, so receivers can switch unhurried."""
    sub = await owned_subscription(call)
    doc = await read_json(call.request, call.services.settings.max_request_body, allow_empty=True)
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise invalid([Problem("body", "must be a JSON object")])
    problems = [Problem(name, "unknown field") for name in sorted(set(doc) - {"overlap_s"})]
    overlap = doc.get("overlap_s", call.services.settings.callback_rotation_overlap_s)
    if not isinstance(overlap, int | float) or isinstance(overlap, bool) or not 0 <= overlap <= MAX_OVERLAP_S:
        problems.append(Problem("overlap_s", f"seconds, from 0 to {MAX_OVERLAP_S:g}"))
    if problems:
        raise invalid(problems)
    if sub.disabled_at is not None:
        raise ApiError(409, "subscription_disabled", "the subscription is disabled")
    rotated = await call.services.store.rotate_subscription_secret(sub.id, now=time.time(), overlap_s=float(overlap))
    assert rotated is not None
    return json_response(subscription_view(call, rotated))


async def send_test_event(call: Call) -> Response:
    """POST /v1/subscriptions/{id}/test `{"type"}`: a signed example event of that type, to this
    subscription only (delivered like any other: retried, visible in its deliveries)."""
    sub = await owned_subscription(call)
    doc = await read_json(call.request, call.services.settings.max_request_body)
    if not isinstance(doc, dict):
        raise invalid([Problem("body", "must be a JSON object")])
    problems = [Problem(name, "unknown field") for name in sorted(set(doc) - {"type"})]
    kind = doc.get("type")
    if kind not in EVENT_TYPES:
        problems.append(Problem("type", f"required, one of {', '.join(EVENT_TYPES)}"))
    if problems:
        raise invalid(problems)
    if sub.disabled_at is not None:
        raise ApiError(409, "subscription_disabled", "the subscription is disabled")
    now = time.time()
    event = sample_event(call.tenant, str(kind), now)
    await call.services.store.add_test_event(event, sub, now=now)
    call.services.wakeup.notify(Topic.DELIVER)
    return json_response({"event_id": event.id, "subscription_id": sub.id, "type": kind}, 202)


def _everything(doc: Any, problems: list[Problem]) -> bool:
    value = doc.get("all", False) if isinstance(doc, dict) else False
    if not isinstance(value, bool):
        problems.append(Problem("all", "must be true or false"))
        return False
    return value


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
    """POST /v1/subscriptions/{id}/replay `{"since", "all"?}`: every delivery since then that did
    not get through (dead, or failing), again; with `"all": true` delivered ones too."""
    sub = await owned_subscription(call)
    if sub.disabled_at is not None:
        raise ApiError(409, "subscription_disabled", "the subscription is disabled")
    doc = await read_json(call.request, call.services.settings.max_request_body)
    problems: list[Problem] = []
    everything = _everything(doc, problems)
    if problems:
        raise invalid(problems)
    since = _timestamp(doc.get("since") if isinstance(doc, dict) else None)
    await charge_replay(call.services, call.tenant, time.time())
    count = await call.services.store.replay_subscription(sub.id, since=since, now=time.time(), everything=everything)
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
    """GET /v1/events: newest first, `type`, `limit`, `since` and an opaque cursor; ties on
    created_at are ordered by id, so paging neither skips nor repeats an event."""
    listing = parse_event_listing(call.request.query_params, EVENT_TYPES)
    since = _timestamp(call.request.query_params.get("since"))
    events = await call.services.store.list_events(
        call.tenant, since=since, limit=listing.limit, type=listing.type, before=listing.before
    )
    last = events[-1] if len(events) == listing.limit else None
    return json_response(
        {
            "events": [event_view(e) for e in events],
            "next_cursor": encode_event_cursor(last.created_at, last.id) if last else None,
        }
    )


async def event_deliveries(call: Call) -> Response:
    event = await owned_event(call)
    found = await call.services.store.event_deliveries(event.id)
    return json_response({"event": event_view(event), "deliveries": [delivery_view(d, a) for d, a in found]})


async def replay_event(call: Call) -> Response:
    """POST /v1/events/{id}/replay `{"all"?}`: its deliveries that did not get through, again."""
    event = await owned_event(call)
    doc = await read_json(call.request, call.services.settings.max_request_body, allow_empty=True)
    problems: list[Problem] = []
    everything = _everything(doc, problems)
    if problems:
        raise invalid(problems)
    await charge_replay(call.services, call.tenant, time.time())
    count = await call.services.store.replay_event(event.id, now=time.time(), everything=everything)
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
