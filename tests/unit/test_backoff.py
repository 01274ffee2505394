from __future__ import annotations

import random

from service.backoff import Backoff
from service.pricing import price_usd


def test_delay_grows_exponentially_until_the_cap() -> None:
    b = Backoff(base_s=1.0, max_s=30.0)
    assert [b.ceiling(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_delay_has_jitter_within_half_to_full_ceiling() -> None:
    b = Backoff(base_s=2.0, max_s=100.0)
    rng = random.Random(1)
    delays = [b.delay(3, rng) for _ in range(200)]
    assert all(8.0 <= d <= 16.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100


def test_price_is_a_cent_per_started_million_pixels() -> None:
    assert price_usd(640 * 480) == 0.01
    assert price_usd(1_000_000) == 0.01
    assert price_usd(1_000_001) == 0.02
    assert price_usd(3072 * 3072) == 0.1
