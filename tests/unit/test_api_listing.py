"""List parameters: cursors round-trip and anything else is refused with its name."""

from __future__ import annotations

import pytest

from service.api.errors import ApiError
from service.api.listing import (
    DEFAULT_BATCH_LIMIT,
    DEFAULT_LIMIT,
    START,
    BatchListing,
    encode_batch_cursor,
    encode_cursor,
    parse_batch_listing,
    parse_listing,
)
from service.states import State


def test_defaults_start_at_the_first_job() -> None:
    listing = parse_listing({})
    assert (listing.state, listing.after_seq, listing.limit) == (None, START, DEFAULT_LIMIT)


def test_cursor_round_trips_and_is_opaque() -> None:
    cursor = encode_cursor(41)
    assert "41" not in cursor
    assert parse_listing({"cursor": cursor, "state": "failed", "limit": "500"}).after_seq == 41
    assert parse_listing({"state": "failed"}).state is State.FAILED


def test_every_bad_parameter_is_named() -> None:
    forged = encode_cursor(0).replace(encode_cursor(0)[:4], "AAAA")
    with pytest.raises(ApiError) as caught:
        parse_listing({"cursor": forged, "state": "nope", "limit": "-1"})
    assert [p["path"] for p in caught.value.detail] == ["state", "limit", "cursor"]


def test_batch_cursor_round_trips_and_bad_batch_parameters_are_named() -> None:
    listing = parse_batch_listing({"cursor": encode_batch_cursor(1700000000.123456, "b-1"), "limit": "100"})
    assert (listing.before, listing.limit) == ((1700000000.123456, "b-1"), 100)
    assert parse_batch_listing({}) == BatchListing(None, DEFAULT_BATCH_LIMIT)
    with pytest.raises(ApiError) as caught:
        parse_batch_listing({"cursor": encode_cursor(3), "limit": "101"})  # a jobs cursor is not a batches one
    assert [p["path"] for p in caught.value.detail] == ["limit", "cursor"]
