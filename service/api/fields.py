"""Checks for the fields of API bodies. Each check records a `Problem` and returns None when the
value is unusable, so one pass over a body finds every problem."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import orjson

from service.api.errors import Problem
from service.settings import Settings
from service.urlguard import UrlPolicy, UrlRefused, callback_policy, image_policy

MAX_URL_CHARS = 2048
MAX_TEXT_CHARS = 1000
MAX_METADATA_BYTES = 4096
SEGMENT_FACTOR_MIN, SEGMENT_FACTOR_MAX = -512, 512


class Fields:
    """Validates fields against the limits in `settings`, collecting problems."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.problems: list[Problem] = []

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(Problem(path, reason))

    def unknown(self, obj: Mapping[str, Any], allowed: Collection[str], path: str) -> None:
        for name in sorted(set(obj) - set(allowed)):
            self.problem(f"{path}.{name}" if path else name, "unknown field")

    def array(self, value: Any, path: str, *, required: bool) -> list[Any] | None:
        if value is None:
            if required:
                self.problem(path, "required")
            return None
        if not isinstance(value, list):
            self.problem(path, "must be an array")
            return None
        return value

    def count(self, n: int, path: str) -> bool:
        """True when `n` jobs fit in one batch."""
        most = self.settings.max_batch_items
        if n < 1:
            self.problem(path, "must hold at least 1 item")
        elif n > most:
            self.problem(path, f"makes {n} jobs; a batch holds at most {most}")
        return 1 <= n <= most

    def text(self, value: Any, path: str, *, required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str):
            self.problem(path, "required" if value is None else "must be a string")
            return None
        if required and not value.strip():
            self.problem(path, "must not be empty")
            return None
        if len(value) > MAX_TEXT_CHARS:
            self.problem(path, f"at most {MAX_TEXT_CHARS} characters")
            return None
        if "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse it here rather than fail the write
            self.problem(path, "must not contain NUL characters")
            return None
        return value

    def segment_factor(self, value: Any, path: str) -> int | None:
        if value is None:
            return None
        # bool is an int in Python; `true` is never a meaningful segment factor.
        if not isinstance(value, int) or isinstance(value, bool):
            self.problem(path, "must be an integer")
            return None
        if not SEGMENT_FACTOR_MIN <= value <= SEGMENT_FACTOR_MAX:
            self.problem(path, f"must be between {SEGMENT_FACTOR_MIN} and {SEGMENT_FACTOR_MAX}")
            return None
        return value

    def metadata(self, value: Any, path: str) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(path, "must be an object")
            return None
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (255), though it reads 1024
            self.problem(path, "is nested too deeply")
            return None
        if size > MAX_METADATA_BYTES:
            self.problem(path, f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES}")
            return None
        return value

    def image(self, value: Any, path: str) -> str | None:
        """An absolute http(s) URL the upstream can fetch."""
        return self._url(value, path, image_policy(self.settings), required=True)

    def callback_url(self, value: Any, path: str) -> str | None:
        """Where batch events are delivered: https, unless running against the local sandbox."""
        return self._url(value, path, callback_policy(self.settings), required=False)

    def _url(self, value: Any, path: str, policy: UrlPolicy, *, required: bool) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str):
            self.problem(path, "required" if value is None else "must be a string")
            return None
        reason = url_problem(value, policy)
        if reason is not None:
            self.problem(path, reason)
            return None
        return value


def url_problem(url: str, policy: UrlPolicy) -> str | None:
    """Why `url` is refused under `policy`, or None when it is acceptable."""
    if len(url) > MAX_URL_CHARS:
        return f"at most {MAX_URL_CHARS} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "must not contain spaces or control characters"
    try:
        policy.check(url)
    except UrlRefused as exc:
        schemes = "https" if policy.https_only else "http(s)"
        return f"must be an absolute {schemes} URL with a public host ({exc})"
    return None
