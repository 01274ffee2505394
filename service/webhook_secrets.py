"""Per-job, per-attempt webhook secrets: derived, never stored.

secret = urlsafe_b64(HMAC-SHA256(master_key, f"{job_id}:{attempt}")). The first master key signs;
every configured key verifies, so keys rotate without downtime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

MAX_ATTEMPTS_VERIFIED = 32
"""Attempt numbers a secret is checked against; a job never runs more attempts than this."""


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

    def attempt_of(self, job_id: str, presented: str, max_attempt: int = MAX_ATTEMPTS_VERIFIED) -> int | None:
        """The attempt whose secret `presented` is, under any configured key; None if none.

        Each candidate is compared in constant time. The search stops at the first match: the
        attempt number it reveals through timing is not secret, and most webhooks match attempt 1.
        """
        given = presented.encode()
        for attempt in range(1, max_attempt + 1):
            for key in self._keys:
                if hmac.compare_digest(_derive(key, job_id, attempt).encode(), given):
                    return attempt
        return None


def _derive(key: bytes, job_id: str, attempt: int) -> str:
    mac = hmac.digest(key, f"{job_id}:{attempt}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
