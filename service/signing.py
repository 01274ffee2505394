"""Signatures on outbound callbacks, in the Standard Webhooks format.

Headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; the signed content is
`{id}.{timestamp}.{body}`. `v1,` signatures are HMAC-SHA256 under a `whsec_` secret; `v1a,`
signatures are Ed25519, verifiable with the `whpk_` public key the API serves.

Secrets and private keys are derived from the master keys and the owner (a subscription id, or
`tenant:<name>` for batch callback URLs): nothing secret is stored, and with several master keys
every message carries one signature per key, so receivers can rotate without missing a message.

A subscription's own secret rotates too (POST /v1/subscriptions/{id}/rotate-secret): generation n
signs as owner `<id>#v<n>`, and until the overlap ends the previous generation signs as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _generation(sub_id: str, version: int) -> str:
    return sub_id if version == 0 else f"{sub_id}#v{version}"


def subscription_owners(sub_id: str, version: int, previous_until: float | None, now: float) -> list[str]:
    """Who signs a subscription's deliveries now: its current generation, then the previous one
    while the rotation's overlap lasts."""
    owners = [_generation(sub_id, version)]
    if version > 0 and previous_until is not None and now < previous_until:
        owners.append(_generation(sub_id, version - 1))
    return owners


class CallbackSigner:
    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise ValueError("at least one master key is required")
        self._keys = tuple(master_keys)

    def _material(self, key: bytes, purpose: str, owner: str) -> bytes:
        return hmac.digest(key, f"segflow-callback:{purpose}:{owner}".encode(), hashlib.sha256)

    def secrets(self, owner: str | Sequence[str]) -> list[str]:
        """The owners' `whsec_` secrets, newest (signing) first; all of them sign each message."""
        owners = [owner] if isinstance(owner, str) else owner
        return ["whsec_" + _b64(self._material(k, "hmac", o)) for o in owners for k in self._keys]

    def public_keys(self, owner: str | Sequence[str]) -> list[str]:
        """The owners' `whpk_` Ed25519 public keys, newest first."""
        owners = [owner] if isinstance(owner, str) else owner
        out = []
        for o in owners:
            for key in self._keys:
                public = self._private_key(key, o).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                out.append("whpk_" + _b64(public))
        return out

    def _private_key(self, key: bytes, owner: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._material(key, "ed25519", owner))

    def headers(
        self, owner: str | Sequence[str], msg_id: str, timestamp: int, body: bytes, *, asymmetric: bool = False
    ) -> dict[str, str]:
        """The three Standard Webhooks headers for one delivery of `body`, signed by every owner."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        owners = [owner] if isinstance(owner, str) else owner
        signatures = []
        for o in owners:
            for key in self._keys:
                secret = self._material(key, "hmac", o)
                signatures.append("v1," + _b64(hmac.digest(secret, content, hashlib.sha256)))
                if asymmetric:
                    signatures.append("v1a," + _b64(self._private_key(key, o).sign(content)))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }
