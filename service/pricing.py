"""What the upstream charges for a task."""

from __future__ import annotations

import math


def price_usd(pixels: int) -> float:
    """$0.01 per started million pixels of the input image, at least $0.01 (the contract's reading)."""
    return round(max(1, math.ceil(pixels / 1_000_000)) * 0.01, 2)
