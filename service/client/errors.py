"""The client's errors: one class per kind of refusal, so callers catch what they can handle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class SegflowError(Exception):
    """Anything the client could not do."""


class ConnectionFailed(SegflowError):
    """segflow could not be reached (refused, reset, timed out) after every retry."""


class ApiError(SegflowError):
    """segflow answered with an error: `status`, its `code` (the body's `error`), `message`,
    `detail` (a 422's problems: `[{"path", "reason"}]`) and the `request_id` to quote."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Sequence[Mapping[str, Any]] = (),
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"segflow answered {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = list(detail)
        self.request_id = request_id
        self.retry_after_s = retry_after_s


class BadRequest(ApiError):
    """400: the body is not JSON, or a parameter is malformed."""


class Unauthorized(ApiError):
    """401: no API key, or not a valid one."""


class NotFound(ApiError):
    """404: no such thing (or it belongs to another tenant)."""


class Conflict(ApiError):
    """409: e.g. an Idempotency-Key reused with another body, a limit reached, a disabled subscription."""


class PayloadTooLarge(ApiError):
    """413: the body is larger than the server accepts."""


class ValidationFailed(ApiError):
    """422: `detail` names every problem."""


class RateLimited(ApiError):
    """429 after every retry: `retry_after_s` says when to try again."""


class ServerError(ApiError):
    """5xx after every retry."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
}


def error_for(status: int) -> type[ApiError]:
    return _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)


class InvalidSignature(SegflowError):
    """A callback whose signature, timestamp or headers do not verify."""
