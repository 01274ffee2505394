"""Signatures on outbound callbacks, in the Standard Webhooks format.

Headers `webhook-id`, `webhook-timestamp` and `webhook-signature`; the signed content is
`{id}.{timestamp}.{body}`. `v1,` signatures are HMAC-SHA256 under a `whsec_` secret; `v1a,`
signatures are Ed25519, verifiable with the `whpk_` public key the API serves.

Secrets and private keys are derived from the master keys and the owner (a subscription id, or
`tenant:<name>` for batch callback URLs): nothing secret is stored, and with several master keys
every message carries one signature per key, so receivers can rotate without missing a message.
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


class CallbackSigner:
    def __init__(self, master_keys: Sequence[bytes]) -> None:
        if not master_keys:
            raise ValueError("at least one master key is required")
        self._keys = tuple(master_keys)

    def _material(self, key: bytes, purpose: str, owner: str) -> bytes:
        return hmac.digest(key, f"segflow-callback:{purpose}:{owner}".encode(), hashlib.sha256)

    def secrets(self, owner: str) -> list[str]:
        """The owner's `whsec_` secrets, newest (signing) first; all of them sign each message."""
        return ["whsec_" + _b64(self._material(k, "hmac", owner)) for k in self._keys]

    def public_keys(self, owner: str) -> list[str]:
        """The owner's `whpk_` Ed25519 public keys, newest first."""
        out = []
        for key in self._keys:
            public = self._private_key(key, owner).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            out.append("whpk_" + _b64(public))
        return out

    def _private_key(self, key: bytes, owner: str) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._material(key, "ed25519", owner))

    def headers(
        self, owner: str, msg_id: str, timestamp: int, body: bytes, *, asymmetric: bool = False
    ) -> dict[str, str]:
        """The three Standard Webhooks headers for one delivery of `body`."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        signatures = []
        for key in self._keys:
            secret = self._material(key, "hmac", owner)
            signatures.append("v1," + _b64(hmac.digest(secret, content, hashlib.sha256)))
            if asymmetric:
                signatures.append("v1a," + _b64(self._private_key(key, owner).sign(content)))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }
