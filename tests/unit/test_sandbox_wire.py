"""Decoding the create body: what is accepted, echoed, and refused with which message."""

from __future__ import annotations

from typing import Any

import pytest

from service.sandbox.images import probe_image
from service.sandbox.wire import SandboxError, parse_create
from tests.fixtures.sandbox import image_bytes


def body(**input_changes: Any) -> dict[str, Any]:
    return {
        "model": "Qubico/image-toolkit",
        "task_type": "segment",
        "input": {"image": "https://example.com/a.jpg", "prompt": "car", **input_changes},
    }


def test_minimal_body_takes_zero_values_and_echoes_an_empty_config() -> None:
    request = parse_create(body())
    assert request.input_echo() == {
        "image": "https://example.com/a.jpg",
        "prompt": "car",
        "negative_prompt": "",
        "segment_factor": 0,
    }
    assert request.config_echo() == {"service_mode": "", "webhook_config": {"endpoint": "", "secret": ""}}


def test_webhook_config_is_echoed_with_its_secret() -> None:
    request = parse_create(
        {
            **body(),
            "config": {"service_mode": "public", "webhook_config": {"endpoint": "http://h/x", "secret": "s"}},
        }
    )
    assert request.config_echo()["webhook_config"] == {"endpoint": "http://h/x", "secret": "s"}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        (None, "JSON object"),
        ({**body(), "model": None}, "model"),
        (body(image="/relative.jpg"), "input.image"),
        (body(prompt="  "), "input.prompt"),
        (body(segment_factor=True), "input.segment_factor"),
        (body(segment_factor="3"), "input.segment_factor"),
        ({**body(), "config": []}, "config"),
        ({**body(), "config": {"webhook_config": {"endpoint": "http://h/x", "secret": 5}}}, "secret"),
    ],
)
def test_invalid_body_is_refused_with_400(payload: Any, message: str) -> None:
    with pytest.raises(SandboxError) as caught:
        parse_create(payload)
    assert caught.value.status == 400 and message in caught.value.message


def test_probe_reads_size_and_format_and_refuses_large_sides() -> None:
    image = probe_image(image_bytes(30, 20, "JPEG"), max_side_px=3072)
    assert (image.format, image.width, image.height, image.pixels) == ("JPEG", 30, 20, 600)
    with pytest.raises(SandboxError, match="4000x10"):
        probe_image(image_bytes(4000, 10), max_side_px=3072)
