"""Pure spend logic (issue 19): how job changes move the totals, caps, and what an image's first
bytes say about it."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from service.preflight import HEAD_BYTES, inspect_head
from service.spend import WORST_CASE_USD, Caps, deltas, keys, refusal, tightest
from tests.fixtures.rows import job_row

AT = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def test_totals_are_per_batch_and_per_tenant_utc_day_and_month() -> None:
    assert keys("acme", "B", AT + 86_399) == (("batch", "B"), ("day", "acme:2025-12-01"), ("month", "acme:2025-12"))
    assert keys("acme", "B", AT - 1)[1:] == (("day", "acme:2025-11-30"), ("month", "acme:2025-11"))


def test_a_reservation_adds_and_its_release_takes_back_where_it_was_made() -> None:
    free = job_row()
    held = job_row(reserved_usd=0.02, reserved_at=AT)
    assert dict(deltas(free, held, AT)) == dict.fromkeys(keys("acme", "B", AT), 0.02)
    released = job_row(reserved_at=AT)  # a day later: still counted back on the day it was made
    assert dict(deltas(held, released, AT + 86_400)) == dict.fromkeys(keys("acme", "B", AT), -0.02)


def test_a_price_settles_a_reservation_and_an_unsettled_one_stays_counted() -> None:
    held = job_row(reserved_usd=0.1, reserved_at=AT)
    stored = job_row(reserved_at=AT, price_usd=0.02)
    moved: dict[tuple[str, str], float] = {}
    for k, usd in deltas(held, stored, AT + 5):
        moved[k] = moved.get(k, 0.0) + usd
    assert moved == pytest.approx(dict.fromkeys(keys("acme", "B", AT), -0.08))
    # A second attempt's reservation leaves the first one counted: that task may have been paid.
    again = job_row(reserved_usd=0.1, reserved_at=AT + 60)
    assert dict(deltas(held, again, AT + 60)) == dict.fromkeys(keys("acme", "B", AT + 60), 0.1)


def test_a_reservation_passing_any_cap_is_refused_and_names_it() -> None:
    caps = Caps(batch_usd=0.03, daily_usd=1.0, monthly_usd=None)
    assert refusal(caps, {"batch": 0.02}, 0.01) is None  # exactly at the cap fits
    batch = refusal(caps, {"batch": 0.03}, 0.01)
    assert batch is not None and batch[0] == "batch" and "max_spend_usd of $0.03" in batch[1]
    day = refusal(caps, {"batch": 0.0, "day": 0.995}, 0.01)
    assert day is not None and day[0] == "day" and "daily cap of $1" in day[1]
    assert tightest(None, 5.0, 2.0, 0.0) == 2.0 and tightest(None, 0.0) is None


def encoded(width: int, height: int, fmt: str, **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (9, 9, 9)).save(out, format=fmt, **save)
    return out.getvalue()


def test_the_first_bytes_give_format_size_and_estimate() -> None:
    png = inspect_head(encoded(1200, 1000, "PNG")[:64])
    assert (png.refused, png.format, png.pixels, png.estimate_usd) == (None, "png", 1_200_000, 0.02)
    # A JPEG whose EXIF block pushes the frame header far in is still read from its first bytes.
    jpeg = inspect_head(encoded(640, 480, "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 60_000)[:HEAD_BYTES])
    assert (jpeg.refused, jpeg.format, jpeg.pixels) == (None, "jpg", 307_200)


def test_non_images_and_oversized_sides_are_refused_and_unreadable_sizes_are_worst_case() -> None:
    assert inspect_head(b"<html>hello</html>").refused == "not a JPG or PNG image"
    assert inspect_head(encoded(20, 20, "GIF")).refused == "not a JPG or PNG image"
    assert "3073x8" in str(inspect_head(encoded(3073, 8, "PNG")[:64]).refused)
    truncated = inspect_head(encoded(640, 480, "JPEG")[:4])  # the frame header was not read
    assert truncated.refused is None and truncated.pixels is None and truncated.estimate_usd == WORST_CASE_USD
