"""Account limits and output expiry, on a hand-driven clock."""

from __future__ import annotations

import pytest

from service.sandbox.limits import AccountLimits, retry_after_header
from service.sandbox.outputs import OutputStore
from service.sandbox.wire import SandboxError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limits(clock: Clock, **kw: object) -> AccountLimits:
    options: dict[str, object] = {
        "rate_per_s": 0.0,
        "concurrency": 0,
        "credit_usd": None,
        "retry_after_busy_s": 1.0,
    }
    options.update(kw)
    return AccountLimits(clock=clock, **options)  # type: ignore[arg-type]


def test_token_bucket_refills_at_the_rate() -> None:
    clock = Clock()
    account = limits(clock, rate_per_s=2.0)
    account.check_rate_and_concurrency("k")
    account.check_rate_and_concurrency("k")
    with pytest.raises(SandboxError) as caught:
        account.check_rate_and_concurrency("k")
    assert caught.value.status == 429 and caught.value.retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    account.check_rate_and_concurrency("k")
    account.check_rate_and_concurrency("other-key")  # buckets are per key


def test_concurrency_counts_tasks_until_they_end() -> None:
    account = limits(Clock(), concurrency=1)
    account.task_started("k")
    with pytest.raises(SandboxError, match="concurrency"):
        account.check_rate_and_concurrency("k")
    account.task_ended("k")
    account.check_rate_and_concurrency("k")


def test_credit_is_reserved_and_refunded() -> None:
    account = limits(Clock(), credit_usd=0.02)
    account.reserve(0.01)
    account.reserve(0.01)
    with pytest.raises(SandboxError) as caught:
        account.reserve(0.01)
    assert caught.value.status == 402
    account.refund(0.01)
    account.reserve(0.01)
    assert account.credit_left_usd == pytest.approx(0.0)


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.2, 1.0, 1.1)] == ["1", "1", "1", "2"]


def test_outputs_expire_on_read_and_on_sweep() -> None:
    clock = Clock()
    store = OutputStore(clock)
    store.put("a.png", b"a", expires_at=101.0)
    store.put("b.png", b"b", expires_at=102.0)
    assert store.get("a.png") == b"a"
    clock.now = 101.0
    assert store.get("a.png") is None
    clock.now = 105.0
    assert store.sweep() == 1 and len(store) == 0 and store.expired == 2


def test_has_slot_follows_the_concurrency_limit() -> None:
    limits = AccountLimits(rate_per_s=0, concurrency=1, credit_usd=None, retry_after_busy_s=1, clock=lambda: 0.0)
    assert limits.has_slot("k")
    assert not limits.check_rate_and_concurrency("k", stage=True)  # under the limit: not staged
    limits.task_started("k")
    assert not limits.has_slot("k") and limits.has_slot("other")
    assert limits.check_rate_and_concurrency("k", stage=True)  # over it: staged, not refused
    limits.task_ended("k")
    assert limits.has_slot("k")
