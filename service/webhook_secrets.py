"""Per-job, per-attempt webhook secrets: derived, never stored.

secret = urlsafe_b64(HMAC-SHA256(master_key, f"{job_id}:{attempt}")). The first master key signs;
every configured key verifies, so keys rotate without downtime.

The attempt travels in the endpoint path (`/webhooks/qubico/{job_id}/{attempt}`), so checking a
secret costs one HMAC per master key whatever the attempt, right or wrong. Endpoints handed out
before the attempt was in the path (`/webhooks/qubico/{job_id}`) are still verified, against each
attempt a job can have, until the operator turns that off (`[server] legacy_webhook_path`).
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Sequence

MAX_ATTEMPTS_VERIFIED = 32
"""Attempt numbers a secret is checked against; a job never runs more attempts than this."""

WEBHOOK_PREFIX = "/webhooks/qubico/"
_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JOB_ID_CHARS = 36


def well_formed_job_id(job_id: str) -> bool:
    """A job id as the store makes them (a UUID in canonical form): checked before any HMAC."""
    return len(job_id) == _JOB_ID_CHARS and _JOB_ID.fullmatch(job_id) is not None


def parse_attempt(raw: str) -> int | None:
    """The attempt number of an endpoint path segment, or None if it is not one."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 2 and raw[0] != "0"):
        return None
    attempt = int(raw)
    return attempt if attempt <= MAX_ATTEMPTS_VERIFIED else None


def webhook_path(job_id: str, attempt: int) -> str:
    """The path of the webhook endpoint handed to the upstream for this job's attempt."""
    return f"{WEBHOOK_PREFIX}{job_id}/{attempt}"


def job_of_endpoint(endpoint: str) -> str | None:
    """The job id in a webhook endpoint URL, of either shape; None for another URL."""
    _, found, rest = endpoint.partition(WEBHOOK_PREFIX)
    job_id = rest.split("/", 1)[0]
    return job_id if found and job_id else None


class WebhookSecrets:
    """Derives and verifies webhook secrets from one or more master keys."""

    __slots__ = ("_keys",)

    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise ValueError("at least one webhook master key is required")
        if any(len(k) < 16 for k in master_keys):
            raise ValueError("webhook master keys must be at least 16 bytes")
        self._keys = tuple(master_keys)

    def derive(self, job_id: str, attempt: int) -> str:
        """The secret the upstream must echo for this job's attempt (signed with the first key)."""
        return _derive(self._keys[0], job_id, attempt)

    def verify(self, job_id: str, attempt: int, presented: str) -> bool:
        """True if `presented` is this attempt's secret under any configured key.

        Every key is tried, without stopping at a match: one HMAC per key, whether the secret is
        right or wrong, so a wrong one costs no more than a right one and timing tells no key."""
        given = presented.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(_derive(key, job_id, attempt).encode(), given)
        return matched

    def attempt_of(self, job_id: str, presented: str, max_attempt: int = MAX_ATTEMPTS_VERIFIED) -> int | None:
        """For endpoints without the attempt in the path: the attempt whose secret `presented` is,
        among 1..max_attempt under any configured key; None if none. Costs up to max_attempt HMACs
        per key; each candidate is compared in constant time."""
        for attempt in range(1, max_attempt + 1):
            if self.verify(job_id, attempt, presented):
                return attempt
        return None


def _derive(key: bytes, job_id: str, attempt: int) -> str:
    # An HMAC object, the digest by name: OpenSSL's, keeping the GIL (the one-shot hmac.digest lets
    # it go for every call, and the event loop then waits to get it back behind the store's threads).
    mac = hmac.new(key, f"{job_id}:{attempt}".encode(), "sha256").digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
