"""Decoding of upstream payloads: every example of the contract, every documented variant, and
garbage refused with the field's path and never with the secret."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.upstream.wire import (
    INLINE_PREFIX,
    REDACTED,
    CreateRequest,
    FailureKind,
    TaskStatus,
    WireError,
    decode_account,
    decode_envelope,
    decode_history,
    decode_task,
    decode_webhook,
    envelope_error,
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


def test_create_response_with_empty_status_is_pending_with_zero_times() -> None:
    snap = decode_envelope(load("create-response.json"))
    assert snap.task_id == "75a20dc9-ac3f-4869-b8d5-b9xxxxx7"
    assert snap.status is TaskStatus.PENDING and snap.raw_status == ""  # status "" as documented
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
        ("Staged", TaskStatus.STAGED, False),
        ("running", TaskStatus.PROCESSING, False),
        ("in_progress", TaskStatus.PROCESSING, False),
        ("cancelled", TaskStatus.CANCELLED, True),
        ("Canceled", TaskStatus.CANCELLED, True),
        ("", TaskStatus.PENDING, False),
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


def test_every_output_key_is_read_in_order_without_duplicates() -> None:
    output = {
        "image_url": "https://a/1.png",
        "image_urls": ["https://a/1.png", "https://a/2.png", ""],
        "temporary_image_urls": ["https://img.theapi.app/ephemeral/3.png"],
        "image_base64s": ["iVBORw0KGgo=", "data:image/png;base64,iVBO\nRw0KGgo="],
    }
    assert decode_task(task(output=output)).output_urls == (
        "https://a/1.png",
        "https://a/2.png",
        "https://img.theapi.app/ephemeral/3.png",
        INLINE_PREFIX + "iVBORw0KGgo=",
    )
    only_temporary = decode_task(task(output={"image_urls": None, "temporary_image_urls": ["https://t/1.png"]}))
    assert only_temporary.output_urls == ("https://t/1.png",)
    earlier_api = decode_task(task(output={"image_base64s": None, "image_urls": ["https://a/1", "https://a/2"]}))
    assert earlier_api.output_urls == ("https://a/1", "https://a/2")


def test_inline_output_that_is_not_base64_is_refused_with_its_path() -> None:
    with pytest.raises(WireError, match=r"^data\.output\.image_base64s\[0\]: not base64"):
        decode_task(task(output={"image_base64s": ["<html>"]}))


@pytest.mark.parametrize(
    ("message", "logs", "kind"),
    [
        ("too many requests", [], FailureKind.RETRYABLE),
        ("", ["Too Many Requests, please retry later"], FailureKind.RETRYABLE),
        ("input.image is 4000x3000 px; each side must be at most 3072 px", [], FailureKind.INPUT),
        ("Invalid image: cannot identify image file", [], FailureKind.INPUT),
        ("failed to download image", [], FailureKind.INPUT),
        ("segmentation failed: the model returned no mask", [], FailureKind.OTHER),
        ("", [], FailureKind.OTHER),
    ],
)
def test_failure_texts_sorted_by_one_table(message: str, logs: list[str], kind: FailureKind) -> None:
    snap = decode_task(task(status="failed", output=None, logs=logs, error={"code": 10000, "message": message}))
    assert snap.failure_kind is kind
    assert snap.failure_is_retryable is (kind is FailureKind.RETRYABLE)
    assert decode_task(task()).failure_kind is None  # only a failed task has a failure kind


def test_envelope_error_codes_are_read_only_without_data() -> None:
    assert envelope_error(b'{"code": 429, "data": null, "message": "slow down"}') == (429, "slow down")
    assert envelope_error(b'{"code": 10000, "message": "no"}') == (10000, "no")
    assert envelope_error(b'{"code": 200, "data": null, "message": "task t canceled"}') is None
    assert envelope_error(b'{"code": 0, "data": null}') is None
    assert envelope_error(orjson.dumps({"code": 500, "data": task()})) is None  # a task id wins
    assert envelope_error(b"not json") is None


def test_history_page_in_any_container_with_unix_or_rfc3339_times() -> None:
    row = {"task_id": "t1", "status": "Canceled", "model": "image_toolkit", "created_at": 1729679521}
    for data in ({"tasks": [row], "page": 2, "page_size": 50, "total": 51}, {"list": [row]}, [row]):
        page = decode_history(orjson.dumps({"code": 200, "data": data}))
        assert [r.task_id for r in page.tasks] == ["t1"]
        assert page.tasks[0].status is TaskStatus.CANCELLED
        assert page.tasks[0].created_at is not None and page.tasks[0].created_at.year == 2024
    assert decode_history(orjson.dumps({"data": {"tasks": [row], "page": 2}})).page == 2
    with pytest.raises(WireError, match=r"^data\.tasks\[0\]\.task_id: missing"):
        decode_history(b'{"data": {"tasks": [{"status": "completed"}]}}')
    with pytest.raises(WireError, match=r"^data: missing"):
        decode_history(b'{"code": 200}')


def test_account_info_reads_the_usable_balance() -> None:
    body = {"code": 200, "data": {"account_name": "me", "account_id": 42, "credits": 1000, "equivalent_in_usd": 9.5}}
    info = decode_account(orjson.dumps(body))
    assert (info.account_id, info.equivalent_in_usd, info.credits) == ("42", 9.5, 1000.0)
    with pytest.raises(WireError, match=r"^data\.equivalent_in_usd: expected"):
        decode_account(b'{"data": {"equivalent_in_usd": "lots"}}')


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
