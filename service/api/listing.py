"""Query parameters of list routes: a state filter, a page size and an opaque cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from service.api.errors import ApiError, Problem, invalid
from service.states import State

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
DEFAULT_BATCH_LIMIT = 20
MAX_BATCH_LIMIT = 100  # each batch listed costs its own progress counts
START = -1  # before the first job's seq (seqs start at 0)
MAX_SEQ = 2**63 - 1  # the stores' integer columns are 64-bit: a larger "after" is no cursor of ours
MAX_CURSOR_CHARS = 512
_CURSOR = "cursor"


@dataclass(frozen=True, slots=True)
class Listing:
    state: State | None
    after_seq: int
    limit: int


@dataclass(frozen=True, slots=True)
class BatchListing:
    before: tuple[float, str] | None  # (created_at, id) of the last batch already seen
    limit: int


@dataclass(frozen=True, slots=True)
class EventListing:
    type: str | None
    before: tuple[float, str] | None  # (created_at, id) of the last event already seen
    limit: int


def encode_event_cursor(created_at: float, event_id: str) -> str:
    """The cursor for the events listed after (older than) this one."""
    return base64.urlsafe_b64encode(orjson.dumps({"before_event": [created_at, event_id]})).rstrip(b"=").decode()


def parse_event_listing(query: Mapping[str, str], types: tuple[str, ...]) -> EventListing:
    """The page of events a query asks for; 400 for a bad cursor, else 422 naming every bad parameter."""
    problems: list[Problem] = []
    kind = query.get("type") or None
    if kind is not None and kind not in types:
        problems.append(Problem("type", f"must be one of {', '.join(types)}"))
    limit = _limit(query.get("limit"), problems)
    before = _pair_cursor(query.get("cursor"), "before_event", problems)
    _refuse(problems)
    return EventListing(kind, before, limit)


def encode_cursor(seq: int) -> str:
    """The cursor for the page after the job with `seq`; opaque so its form can change."""
    return base64.urlsafe_b64encode(orjson.dumps({"after": seq})).rstrip(b"=").decode()


def encode_batch_cursor(created_at: float, batch_id: str) -> str:
    """The cursor for the batches listed after (older than) this one."""
    return base64.urlsafe_b64encode(orjson.dumps({"before": [created_at, batch_id]})).rstrip(b"=").decode()


def parse_batch_listing(query: Mapping[str, str]) -> BatchListing:
    """The page of batches a query asks for; 422 naming every bad parameter."""
    problems: list[Problem] = []
    limit = _limit(query.get("limit"), problems, DEFAULT_BATCH_LIMIT, MAX_BATCH_LIMIT)
    before = _batch_cursor(query.get("cursor"), problems)
    _refuse(problems)
    return BatchListing(before, limit)


def parse_listing(query: Mapping[str, str]) -> Listing:
    """The listing a query asks for; 422 naming every bad parameter."""
    problems: list[Problem] = []
    state = _state(query.get("state"), problems)
    limit = _limit(query.get("limit"), problems)
    after = _cursor(query.get("cursor"), problems)
    _refuse(problems)
    return Listing(state, after, limit)


def _refuse(problems: list[Problem]) -> None:
    """A bad cursor is a 400 (the client did not send back what it was given); any other bad
    parameter a 422. Either way every problem is named."""
    if any(p.path == _CURSOR for p in problems):
        raise ApiError(
            400, "invalid_cursor", "the cursor is not one this API gave out", [p.as_json() for p in problems]
        )
    if problems:
        raise invalid(problems)


def _state(raw: str | None, problems: list[Problem]) -> State | None:
    if raw is None or raw == "":
        return None
    try:
        return State(raw)
    except ValueError:
        problems.append(Problem("state", f"must be one of {', '.join(s.value for s in State)}"))
        return None


def _limit(raw: str | None, problems: list[Problem], default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    if raw is None:
        return default
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= maximum:
        return int(raw)
    problems.append(Problem("limit", f"must be an integer from 1 to {maximum}"))
    return default


def _decode(raw: str) -> object:
    if len(raw) > MAX_CURSOR_CHARS:
        return None
    try:
        decoded: object = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        return None
    return decoded


def _batch_cursor(raw: str | None, problems: list[Problem]) -> tuple[float, str] | None:
    return _pair_cursor(raw, "before", problems)


def _pair_cursor(raw: str | None, name: str, problems: list[Problem]) -> tuple[float, str] | None:
    if raw is None or raw == "":
        return None
    decoded = _decode(raw)
    before = decoded.get(name) if isinstance(decoded, dict) else None
    match before:
        case [int() | float() as created_at, str() as batch_id] if (
            not isinstance(created_at, bool) and 0 <= created_at < 1e11 and len(batch_id) <= 64
        ):
            return float(created_at), batch_id
    problems.append(Problem(_CURSOR, "not a cursor this API gave out"))
    return None


def _cursor(raw: str | None, problems: list[Problem]) -> int:
    if raw is None or raw == "":
        return START
    decoded = _decode(raw)
    after = decoded.get("after") if isinstance(decoded, dict) else None
    if not isinstance(after, int) or isinstance(after, bool) or not START <= after <= MAX_SEQ:
        problems.append(Problem("cursor", "not a cursor this API gave out"))
        return START
    return after
