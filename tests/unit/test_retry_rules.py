"""The pure rules behind delivery etiquette and the client's retries: Retry-After parsing, the
client's retry decisions, who signs after a secret rotation."""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from service.client import calls
from service.client.core import RetryPolicy
from service.retry_after import retry_after_s
from service.signing import subscription_owners


@pytest.mark.parametrize(
    ("header", "expected"),
    [("120", 120.0), (" 7 ", 7.0), (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None)],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert retry_after_s(header, time.time()) == expected


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    now = time.time()
    assert retry_after_s(formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1.5)
    assert retry_after_s(formatdate(now - 30, usegmt=True), now) == 0.0


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


POLICY = RetryPolicy(retries=3, base_s=1.0, max_wait_s=4.0, max_retry_after_s=60.0)


def test_the_client_retries_what_is_safe_to_retry() -> None:
    create = calls.create_batch([{"image": "https://x/y.png", "prompt": "p"}])  # has an Idempotency-Key
    subscribe = calls.create_subscription("https://hooks.example.com/")  # a POST without one
    read = calls.get_job("j")
    for call in (create, subscribe, read):
        assert POLICY.wait(0, call, answer(429), None) is not None  # refused before doing anything
        assert POLICY.wait(0, call, None, httpx.ConnectError("refused")) is not None  # never sent
        assert POLICY.wait(0, call, answer(404), None) is None
        assert POLICY.wait(3, call, answer(503), None) is None  # out of retries
    for call in (create, read):
        assert POLICY.wait(0, call, answer(503), None) is not None
        assert POLICY.wait(0, call, None, httpx.ReadTimeout("slow")) is not None
    # A 5xx or a lost answer after a keyless POST may have done it: never repeated.
    assert POLICY.wait(0, subscribe, answer(502), None) is None
    assert POLICY.wait(0, subscribe, None, httpx.ReadTimeout("slow")) is None


def test_the_client_backs_off_and_honours_retry_after_within_bounds() -> None:
    read = calls.get_job("j")
    waits = [POLICY.wait(n, read, answer(503), None) for n in range(3)]
    assert all(w is not None for w in waits)
    assert 0.5 <= waits[0] <= 1.5 and 1.0 <= waits[1] <= 3.0 and 2.0 <= waits[2] <= 6.0  # type: ignore[operator]
    assert POLICY.wait(0, read, answer(429, **{"retry-after": "9"}), None) == 9.0
    assert POLICY.wait(0, read, answer(429, **{"retry-after": "3600"}), None) is None  # longer than allowed


def test_batch_creation_always_carries_an_idempotency_key_a_fresh_one_each_call() -> None:
    first, second = (calls.create_batch([{"image": "https://x/y.png", "prompt": "p"}]) for _ in range(2))
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]
    assert calls.create_batch([], idempotency_key="mine").headers["idempotency-key"] == "mine"


def test_after_a_rotation_both_generations_sign_until_the_overlap_ends() -> None:
    now = 1000.0
    assert subscription_owners("sub_1", 0, None, now) == ["sub_1"]
    assert subscription_owners("sub_1", 1, now + 10, now) == ["sub_1#v1", "sub_1"]
    assert subscription_owners("sub_1", 2, now + 10, now) == ["sub_1#v2", "sub_1#v1"]
    assert subscription_owners("sub_1", 2, now - 1, now) == ["sub_1#v2"]
