"""Decoding of upstream payloads: every example of the contract, every documented variant, and
garbage refused with the field's path and never with the secret."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.upstream.wire import (
    REDACTED,
    CreateRequest,
    TaskStatus,
    WireError,
    decode_envelope,
    decode_task,
    decode_webhook,
    redact_secrets,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"


def load(name: str) -> dict[str, Any]:
    return orjson.loads((DATA / name).read_bytes())


def test_the_copies_match_the_shared_examples_when_present() -> None:
    shared = Path(__file__).resolve().parents[3] / "shared" / "upstream" / "examples"
    if not shared.is_dir():  # CI runs with shared/ beside the checkout; a bare clone may not have it
        return
    for example in shared.glob("*.json"):
        assert (DATA / example.name).read_bytes() == example.read_bytes(), example.name


def test_create_response_is_pending_like_with_zero_times() -> None:
    snap = decode_envelope(load("create-response.json"))
    assert snap.task_id == "75a20dc9-ac3f-4869-b8d5-b9xxxxx7"
    assert snap.status is TaskStatus.OTHER and not snap.status.is_final  # status "" as documented
    assert snap.started_at is None and snap.ended_at is None  # the zero time is not a time
    assert snap.created_at is not None and snap.created_at.microsecond == 12033  # nanoseconds trimmed
    assert snap.output_urls == () and snap.error is None and snap.logs == ()


def test_completed_webhook_has_one_mask_url_and_usage() -> None:
    delivery = decode_webhook((DATA / "webhook-completed.json").read_bytes())
    snap = delivery.task
    assert delivery.timestamp == 1729679521
    assert snap.status is TaskStatus.COMPLETED and snap.is_segment
    assert snap.output_urls == ("https://img.theapi.app/temp/9a1d2c3b-4e5f-4a6b-8c7d-0e1f2a3b4c5d.png",)
    assert snap.usage_consume == 100000
    assert snap.ended_at is not None and snap.ended_at.utcoffset() is not None
    assert snap.webhook_endpoint is not None and snap.webhook_endpoint.endswith("0b7f3c2e-6f0e-4c8e-9d43-2a1f5a9c7e11")


def test_rate_limited_failure_is_retryable() -> None:
    snap = decode_webhook((DATA / "webhook-failed-rate-limited.json").read_bytes()).task
    assert snap.status is TaskStatus.FAILED and snap.failure_is_retryable
    assert snap.error is not None and snap.error.code == 10000


def test_other_models_webhook_decodes_but_is_not_a_segment_task() -> None:
    snap = decode_webhook((DATA / "webhook-other-model.json").read_bytes()).task
    assert not snap.is_segment
    assert snap.output_urls == ()  # its output has no image urls


@pytest.mark.parametrize(
    ("raw", "status", "final"),
    [
        ("completed", TaskStatus.COMPLETED, True),
        ("Completed", TaskStatus.COMPLETED, True),
        ("COMPLETED", TaskStatus.COMPLETED, True),
        ("success", TaskStatus.COMPLETED, True),
        ("Failed", TaskStatus.FAILED, True),
        ("Pending", TaskStatus.PENDING, False),
        ("staged", TaskStatus.STAGED, False),
        ("processing", TaskStatus.PROCESSING, False),
        ("running", TaskStatus.OTHER, False),
        ("cancelled", TaskStatus.OTHER, False),
        ("", TaskStatus.OTHER, False),
        ("something-new", TaskStatus.OTHER, False),
    ],
)
def test_statuses_case_insensitive_and_unknown_not_final(raw: str, status: TaskStatus, final: bool) -> None:
    assert TaskStatus.parse(raw) is status
    assert status.is_final is final


def task(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(load("webhook-completed.json")["data"])
    data.update(changes)
    return data


def test_output_variants() -> None:
    assert decode_task(task(output={"image_url": "https://a/1.png"})).output_urls == ("https://a/1.png",)
    assert decode_task(task(output={"image_urls": ["https://a/1.png", "https://a/2.png"]})).output_urls == (
        "https://a/1.png",
        "https://a/2.png",
    )
    assert decode_task(
        task(output={"image_url": "https://a/1.png", "image_urls": ["https://a/1.png"]})
    ).output_urls == ("https://a/1.png",)
    assert decode_task(task(output=None)).output_urls == ()


def test_missing_or_null_optional_parts() -> None:
    snap = decode_task(task(logs=None, meta={"created_at": "2024-10-23T10:31:31Z"}))
    assert snap.logs == () and snap.usage_consume is None
    assert decode_task(task(meta=None, error=None, config=None)).webhook_endpoint is None
    no_meta = task()
    del no_meta["meta"]
    assert decode_task(no_meta).created_at is None


def test_envelope_code_0_or_200_both_succeed() -> None:
    for code in (0, 200):
        envelope = {"code": code, "data": task(), "message": "success"}
        assert decode_envelope(envelope).task_id == task()["task_id"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"not json", "$"),
        (b"[]", "$"),
        (b'{"timestamp": 1}', "data"),
        (b'{"timestamp": "1", "data": {}}', "timestamp"),
        (b'{"timestamp": true, "data": {}}', "timestamp"),
        (b'{"timestamp": 1, "data": []}', "data"),
        (b'{"timestamp": 1, "data": {"task_id": 5}}', "data.task_id"),
        (b'{"timestamp": 1, "data": {"task_id": ""}}', "data.task_id"),
        (
            b'{"timestamp": 1, "data": {"task_id": "t", "output": {"image_urls": "x"}}}',
            "data.output.image_urls",
        ),
        (
            b'{"timestamp": 1, "data": {"task_id": "t", "meta": {"ended_at": "yesterday"}}}',
            "data.meta.ended_at",
        ),
        (b'{"timestamp": 1, "data": {"task_id": "t", "error": {"code": "x"}}}', "data.error.code"),
        (b'{"timestamp": 1, "data": {"task_id": "t", "logs": {"a": 1}}}', "data.logs"),
    ],
)
def test_garbage_is_refused_with_the_field_path(body: bytes, path: str) -> None:
    with pytest.raises(WireError) as err:
        decode_webhook(body)
    assert str(err.value).startswith(path)


def test_the_secret_never_appears_in_a_wire_error() -> None:
    secret = "wKq3v6Zr1nU8yT2bH5dF9aL0cX4sP7eG"
    bad = load("webhook-completed.json")
    bad["data"]["status"] = 42  # malformed next to the secret
    with pytest.raises(WireError) as err:
        decode_webhook(orjson.dumps(bad))
    assert secret not in str(err.value)


@pytest.mark.parametrize("shape", ["webhook", "envelope", "task"])
def test_redaction_removes_the_secret_without_touching_the_input(shape: str) -> None:
    body = load("webhook-completed.json")
    payload = {"webhook": body, "envelope": {"code": 200, "data": body["data"]}, "task": body["data"]}[shape]
    before = copy.deepcopy(payload)
    redacted = redact_secrets(payload)
    assert "wKq3v6Zr1nU8yT2bH5dF9aL0cX4sP7eG" not in orjson.dumps(redacted).decode()
    assert REDACTED in orjson.dumps(redacted).decode()
    assert payload == before


def test_create_request_body_matches_the_example_and_hides_its_secret() -> None:
    example = load("create-request.json")
    req = CreateRequest(
        image=example["input"]["image"],
        prompt="clothes,shoes",
        negative_prompt="pants",
        segment_factor=-15,
        webhook_endpoint=example["config"]["webhook_config"]["endpoint"],
        webhook_secret=example["config"]["webhook_config"]["secret"],
        service_mode="public",
    )
    assert req.to_json() == example
    assert example["config"]["webhook_config"]["secret"] not in repr(req)
