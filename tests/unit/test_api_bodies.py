"""Decoding batch bodies without a server: shapes, limits, URL rules and the request hash."""

from __future__ import annotations

from typing import Any

import pytest

from service.api.bodies import decode_batch
from service.api.errors import ApiError
from service.api.fields import url_problem
from service.settings import Settings
from service.urlguard import UrlPolicy

IMAGE = "https://images.example.com/a.png"


def settings(**overrides: Any) -> Settings:
    return Settings(**{"max_batch_items": 10, "allow_private_image_urls": False, **overrides})


def problems(doc: Any, **overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(ApiError) as caught:
        decode_batch(doc, settings(**overrides))
    assert caught.value.status == 422
    return [(p["path"], p["reason"]) for p in caught.value.detail]


def test_cross_product_keeps_image_major_order_and_shared_fields() -> None:
    request = decode_batch(
        {
            "images": ["https://a.com/1", "https://a.com/2"],
            "prompts": ["x", "y"],
            "negative_prompt": "n",
            "segment_factor": 4,
        },
        settings(),
    )
    assert [(i.image[-1], i.prompt, i.negative_prompt, i.segment_factor) for i in request.items] == [
        ("1", "x", "n", 4),
        ("1", "y", "n", 4),
        ("2", "x", "n", 4),
        ("2", "y", "n", 4),
    ]


def test_defaults_fill_optional_item_fields() -> None:
    (item,) = decode_batch({"items": [{"image": IMAGE, "prompt": "cat"}]}, settings()).items
    assert (item.negative_prompt, item.segment_factor, item.metadata) == ("", 0, None)


def test_request_hash_ignores_key_order_but_not_content() -> None:
    a = decode_batch({"items": [{"image": IMAGE, "prompt": "cat"}], "callback_url": "https://h.com/x"}, settings())
    b = decode_batch({"callback_url": "https://h.com/x", "items": [{"prompt": "cat", "image": IMAGE}]}, settings())
    c = decode_batch({"items": [{"image": IMAGE, "prompt": "dog"}]}, settings())
    assert a.request_hash == b.request_hash != c.request_hash


def test_cross_product_past_the_batch_limit_names_the_count() -> None:
    found = problems({"images": [IMAGE] * 4, "prompts": ["a", "b", "c"]})
    assert found == [("prompts", "makes 12 jobs; a batch holds at most 10")]


def test_segment_factor_bounds_are_inclusive() -> None:
    for value in (-512, 512):
        (item,) = decode_batch({"items": [{"image": IMAGE, "prompt": "c", "segment_factor": value}]}, settings()).items
        assert item.segment_factor == value
    assert problems({"items": [{"image": IMAGE, "prompt": "c", "segment_factor": -513}]})[0][0] == (
        "items[0].segment_factor"
    )


def test_sandbox_mode_allows_private_hosts_and_http_callbacks() -> None:
    request = decode_batch(
        {
            "items": [{"image": "http://127.0.0.1:8700/i.png", "prompt": "c"}],
            "callback_url": "http://127.0.0.1:9000/hook",
        },
        settings(allow_private_image_urls=True),
    )
    assert request.callback_url == "http://127.0.0.1:9000/hook"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.1/x",
        "http://0x7f000001/x",
        "http://0.0.0.0/x",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://100.64.0.1/x",
        "http://169.254.169.254/x",
        "http://[fe80::1]/x",
        "http://240.0.0.1/x",
        "http://localhost/x",
        "http://LOCALHOST./x",
        "http://api.localhost/x",
        "http://example.com:99999/x",
        "http://exa mple.com/x",
        "javascript:alert(1)",
        "//example.com/x",
        "http://[::1/x",
    ],
)
def test_private_or_unusable_urls_are_refused(url: str) -> None:
    assert url_problem(url, UrlPolicy(allow_private=False, https_only=False)) is not None


@pytest.mark.parametrize(
    "url", ["https://example.com/a.png", "http://93.184.216.34:8080/a?b=c", "https://[2606:4700::1111]/a.png"]
)
def test_public_urls_are_accepted(url: str) -> None:
    assert url_problem(url, UrlPolicy(allow_private=False, https_only=False)) is None
