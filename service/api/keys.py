"""API keys: how they are made and the only form in which they are kept (a sha256 hash)."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk_"


def hash_key(key: str) -> str:
    """The sha256 hex digest of `key`: what the store and the comparisons hold."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits), prefixed so leaked keys are easy to recognise."""
    return KEY_PREFIX + secrets.token_urlsafe(32)
