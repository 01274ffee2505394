"""API errors: one exception carrying the answer a request gets, and its problems, if any."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request: where (`items[3].image`) and why."""

    path: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class ApiError(Exception):
    """Answer the request with `status` and the error body `{"error", "message", "detail"}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = list(detail)
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "detail": self.detail}


def invalid(problems: Sequence[Problem]) -> ApiError:
    """422 listing every problem found, so a client fixes them all in one round."""
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    return ApiError(422, "invalid_request", f"the request has {count} {noun}", [p.as_json() for p in problems])


def not_found(what: str) -> ApiError:
    # Another tenant's resource gets this same answer: existence is not revealed.
    return ApiError(404, "not_found", f"no such {what}")
