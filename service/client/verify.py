"""Verify a segflow callback in a receiver: Standard Webhooks headers, `v1` (HMAC-SHA256 under a
`whsec_` secret) and `v1a` (Ed25519 under a `whpk_` public key) signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature as _BadEd25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.client.errors import InvalidSignature

DEFAULT_TOLERANCE_S = 300.0


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():  # any case: frameworks and gateways differ
        if key.lower() == name:
            return value
    raise InvalidSignature(f"missing header {name}")


def _key_bytes(key: str, prefix: str) -> bytes:
    try:
        return base64.b64decode(key.removeprefix(prefix), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature(f"not a {prefix} key") from None


def _matches(key: str, content: bytes, signatures: Sequence[tuple[str, bytes]]) -> bool:
    if key.startswith("whpk_"):
        public = Ed25519PublicKey.from_public_bytes(_key_bytes(key, "whpk_"))
        for version, sig in signatures:
            if version == "v1a":
                try:
                    public.verify(sig, content)
                    return True
                except _BadEd25519:
                    continue
        return False
    expected = hmac.digest(_key_bytes(key, "whsec_"), content, hashlib.sha256)
    return any(version == "v1" and hmac.compare_digest(expected, sig) for version, sig in signatures)


def verify_callback(
    headers: Mapping[str, str],
    body: bytes | str,
    secret_or_public_key: str | Sequence[str],
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The callback's JSON payload once its signature verifies; `InvalidSignature` otherwise.

    `secret_or_public_key` is a `whsec_…` secret, a `whpk_…` public key, or several (during a
    rotation every current one signs, so any one that matches is enough). The timestamp must be
    within `tolerance_s` of now, so a captured message cannot be replayed later; deduplicate on
    `headers["webhook-id"]` (stable across retries and replays).
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance_s:
        raise InvalidSignature("webhook-timestamp is too far from now")
    signatures: list[tuple[str, bytes]] = []
    for part in _header(headers, "webhook-signature").split():
        version, _, value = part.partition(",")
        try:
            signatures.append((version, base64.b64decode(value, validate=True)))
        except (binascii.Error, ValueError):
            continue
    keys = [secret_or_public_key] if isinstance(secret_or_public_key, str) else list(secret_or_public_key)
    content = f"{msg_id}.{stamp}.".encode() + raw
    if not any(_matches(k, content, signatures) for k in keys):
        raise InvalidSignature("no signature matches")
    payload: dict[str, Any] = json.loads(raw)
    return payload
