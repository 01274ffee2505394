"""What can go wrong talking to the upstream, sorted by what the caller should do next."""

from __future__ import annotations


class UpstreamError(Exception):
    """Base class. Messages never contain the API key or a webhook secret."""


class UpstreamRejected(UpstreamError):
    """A definite refusal (4xx other than 429): retrying the same request cannot help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"upstream refused with {status}: {message}")
        self.status = status
        self.message = message


class UpstreamNotFound(UpstreamRejected):
    """404: the upstream does not know the task."""


class UpstreamRateLimited(UpstreamError):
    """429: over the account's rate or concurrency limit; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float | None, message: str = "too many requests") -> None:
        super().__init__(f"upstream rate limited (retry after {retry_after} s): {message}")
        self.retry_after = retry_after


class UpstreamTransient(UpstreamError):
    """Not applied and worth retrying: 5xx answered, connection refused, connect timeout."""


class UpstreamAmbiguous(UpstreamError):
    """The request may have been applied: a timeout or disconnect after it was sent."""
