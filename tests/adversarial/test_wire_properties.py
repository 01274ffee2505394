"""Property-based tests of the upstream webhook decoder (`service.upstream.wire`), the way the
webhook receiver uses it: whatever bytes arrive, decoding either raises `WireError` (the receiver's
400) or returns a snapshot whose every field is well-formed. Anything else would be a 500 from the
receiver, or a half-valid snapshot reaching the completion path."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.upstream.wire import (
    TaskError,
    TaskSnapshot,
    TaskStatus,
    WebhookDelivery,
    WireError,
    decode_envelope,
    decode_task,
    decode_webhook,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
EXAMPLES = {
    name: orjson.loads((DATA / name).read_bytes())
    for name in ("webhook-completed.json", "webhook-failed-rate-limited.json", "webhook-other-model.json")
}
CREATE_RESPONSE = orjson.loads((DATA / "create-response.json").read_bytes())
# The other documented output shapes, so that mutations reach their decoding too.
_VARIANT = copy.deepcopy(EXAMPLES["webhook-completed.json"])
_VARIANT["data"]["status"] = "Canceled"
_VARIANT["data"]["output"] = {
    "image_url": None,
    "temporary_image_urls": ["https://img.theapi.app/ephemeral/a.png", "https://img.theapi.app/ephemeral/b.png"],
    "image_base64s": ["iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo="],
}
EXAMPLES["variant-outputs"] = _VARIANT

# JSON values as orjson reads them: 64-bit integers, finite floats, any text.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["", "completed", "Failed", "SUCCESS", "0001-01-01T00:00:00Z", "2024-10-23T18:31:31.1234567891+08:00"]
    )
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@dataclass(frozen=True)
class Deep:
    """`depth` nested arrays around `leaf`: deeper than orjson writes (255 levels), up to and past the
    1024 levels it reads, so written by `encode` below."""

    depth: int
    leaf: Any

    def materialize(self) -> Any:
        value = self.leaf
        for _ in range(self.depth):
            value = [value]
        return value


def encode(value: Any) -> bytes:
    """JSON bytes for a generated value, including `Deep` ones."""
    if isinstance(value, Deep):
        return b"[" * value.depth + encode(value.leaf) + b"]" * value.depth
    if isinstance(value, list):
        return b"[" + b",".join(encode(v) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + encode(v) for k, v in value.items()) + b"}"
    return orjson.dumps(value)


def materialize(value: Any) -> Any:
    """A generated value as plain Python objects (what orjson.loads would give)."""
    if isinstance(value, Deep):
        return value.materialize()
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    return value


deep_values = st.builds(
    Deep, st.integers(min_value=250, max_value=1100) | st.sampled_from([254, 255, 256, 1023, 1024]), scalars
)
json_values = json_values | st.recursive(deep_values, lambda inner: st.lists(inner, max_size=2), max_leaves=3)

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_well_formed(delivery: WebhookDelivery) -> None:
    """Every field of a decoded delivery has the type and shape the completion path relies on."""
    assert isinstance(delivery.timestamp, int) and not isinstance(delivery.timestamp, bool)
    assert_snapshot(delivery.task)


def assert_snapshot(snap: TaskSnapshot) -> None:
    assert isinstance(snap.task_id, str) and snap.task_id
    assert isinstance(snap.model, str) and isinstance(snap.task_type, str)
    assert isinstance(snap.raw_status, str)
    assert isinstance(snap.status, TaskStatus) and snap.status is TaskStatus.parse(snap.raw_status)
    assert isinstance(snap.output_urls, tuple)
    assert all(isinstance(u, str) and u for u in snap.output_urls)
    assert len(set(snap.output_urls)) == len(snap.output_urls)
    if snap.error is not None:
        assert isinstance(snap.error, TaskError)
        assert isinstance(snap.error.code, int) and not isinstance(snap.error.code, bool)
        assert isinstance(snap.error.message, str) and isinstance(snap.error.raw_message, str)
    for t in (snap.created_at, snap.started_at, snap.ended_at):
        assert t is None or isinstance(t, datetime)
    assert snap.usage_consume is None or (
        isinstance(snap.usage_consume, int) and not isinstance(snap.usage_consume, bool)
    )
    assert isinstance(snap.logs, tuple) and all(isinstance(line, str) for line in snap.logs)
    assert snap.webhook_endpoint is None or (isinstance(snap.webhook_endpoint, str) and snap.webhook_endpoint)
    # The properties the receiver and the completion path read never raise either.
    assert isinstance(snap.is_segment, bool)
    assert isinstance(snap.failure_is_retryable, bool)
    assert isinstance(snap.status.is_final, bool)


def decode_or_refuse(body: bytes) -> WebhookDelivery | None:
    """What the receiver does: WireError is a 400; any other exception would be a 500."""
    try:
        delivery = decode_webhook(body)
    except WireError as exc:
        assert str(exc), "a WireError names the field"
        return None
    assert_well_formed(delivery)
    return delivery


@PROPS
@given(st.binary(max_size=512))
@example(b"")
@example(b"\xff\xfe{}")
@example(b"[" * 100_000)
@example(b'{"timestamp": 1, "data": {"task_id": "t"}}' + b"\x00")
@example(b'{"timestamp": 1, "data": {"task_id": "t", "logs": [' + b"[" * 300 + b"]" * 300 + b"]}}")
def test_arbitrary_bytes_decode_or_raise_only_wire_error(body: bytes) -> None:
    decode_or_refuse(body)


@PROPS
@given(json_values)
def test_arbitrary_json_decodes_or_raises_only_wire_error(value: Any) -> None:
    decode_or_refuse(encode(value))


@PROPS
@given(
    st.integers(min_value=-(2**63), max_value=2**64 - 1) | json_values,
    json_values,
)
def test_arbitrary_envelope_members_decode_or_raise_only_wire_error(timestamp: Any, data: Any) -> None:
    decode_or_refuse(encode({"timestamp": timestamp, "data": data}))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a member of a JSON document (object keys and list indexes)."""
    out: list[tuple[Any, ...]] = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    """A real upstream example with one to three members replaced by any JSON value or removed:
    nearly valid bodies, which reach much deeper into the decoder than random JSON does."""
    doc = copy.deepcopy(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return doc


@PROPS
@given(mutated_examples())
def test_mutated_real_examples_decode_or_raise_only_wire_error(doc: dict[str, Any]) -> None:
    delivery = decode_or_refuse(encode(doc))
    if delivery is not None:
        # What survived decoding is exactly what the body says, not a default papering over garbage.
        data = doc["data"]
        assert delivery.task.task_id == data["task_id"]
        assert delivery.task.raw_status == (data.get("status") or "")


@PROPS
@given(json_values)
def test_task_objects_and_envelopes_decode_or_raise_only_wire_error(value: Any) -> None:
    for decode in (decode_task, decode_envelope):
        try:
            snap = decode(materialize(value))
        except WireError:
            continue
        assert_snapshot(snap)


def test_the_real_examples_decode_well_formed() -> None:
    """The generators start from valid documents (otherwise the properties above prove little)."""
    for doc in EXAMPLES.values():
        delivery = decode_or_refuse(orjson.dumps(doc))
        assert delivery is not None
    assert_snapshot(decode_envelope(CREATE_RESPONSE))
