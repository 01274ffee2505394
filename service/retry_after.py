"""`Retry-After` (RFC 9110 §10.2.3): delay seconds or an HTTP date, read the same way by the
deliverer (answers from receivers) and the client (answers from segflow)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """The header as seconds from `now` (default: the clock); None if absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
