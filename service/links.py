"""Signed, expiring download links for stored masks: absolute URLs on `public_url` that need no
API key, so a serverless receiver of `job.succeeded` can fetch the mask with a plain GET.

    {public_url}/links/masks/{job_id}/{idx}.png?exp=<unix s>&kid=<key id>&sig=<HMAC>

The signature is HMAC-SHA256 over (job id, mask index, expiry) under a link key derived from a
webhook master key (SEGFLOW_WEBHOOK_KEYS) with its own label, so the link key is never the master
key and no secret is in the URL. `kid` names which master key signed (a hash of the derived key,
not the key): the first master key signs, every configured key verifies, so rotating keys (prepend
a new one, drop the old after the link TTL) keeps issued links working; dropping a key revokes
every link it signed. A link that is malformed, altered, for another mask or expired gets the same
403 with the same body: it reveals nothing about why.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

_LABEL = b"segflow-artifact-link:v1"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    secret: bytes


class LinkSigner:
    def __init__(self, master_keys: Sequence[bytes], public_url: str, ttl_s: float) -> None:
        if not master_keys:
            raise ValueError("at least one master key is required")
        keys = []
        for master in master_keys:
            secret = hmac.digest(master, _LABEL, hashlib.sha256)
            keys.append(_Key(hashlib.sha256(b"kid:" + secret).hexdigest()[:12], secret))
        self._keys = tuple(keys)
        self._by_kid = {k.kid: k for k in reversed(keys)}
        self._base = public_url.rstrip("/")
        self.ttl_s = ttl_s

    def mask_url(self, job_id: str, idx: int, *, now: float | None = None) -> str:
        """A link to mask `idx` of `job_id`, valid for the TTL from `now`."""
        expires = math.ceil((time.time() if now is None else now) + self.ttl_s)
        key = self._keys[0]
        sig = self._sign(key, job_id, idx, expires)
        return f"{self._base}/links/masks/{job_id}/{idx}.png?exp={expires}&kid={key.kid}&sig={sig}"

    def verify(self, job_id: str, idx: int, exp: str, kid: str, sig: str, *, now: float | None = None) -> bool:
        """Whether the link's parts are one this service signed and it has not expired."""
        key = self._by_kid.get(kid)
        if key is None or not (exp.isascii() and exp.isdigit()) or len(exp) > 12:
            return False
        expires = int(exp)
        expected = self._sign(key, job_id, idx, expires)
        # Compare first, then look at the time: both answers are the same 403 either way.
        valid = hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
        return valid and expires > (time.time() if now is None else now)

    def _sign(self, key: _Key, job_id: str, idx: int, expires: int) -> str:
        message = f"mask\n{job_id}\n{idx}\n{expires}".encode()
        return _b64(hmac.digest(key.secret, message, hashlib.sha256))


def with_download_link(payload: str, links: LinkSigner) -> str:
    """A `job.succeeded` callback body with a fresh `artifact.download_url`.

    The outbox keeps the event without a link (a stored link would expire while retries and
    replays go on for days); each delivery attempt adds one valid for the link TTL from then.
    """
    if '"job.succeeded"' not in payload:
        return payload
    doc = orjson.loads(payload)
    artifact = (doc.get("data") or {}).get("artifact")
    if doc.get("type") != "job.succeeded" or not isinstance(artifact, dict):
        return payload
    artifact["download_url"] = links.mask_url(doc["data"]["job_id"], 0)
    return orjson.dumps(doc).decode()
