"""Bearer-key authentication: a key names one tenant, from the configuration or the store."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from starlette.requests import Request

from service.api.errors import ApiError
from service.api.keys import hash_key
from service.context import Services
from service.settings import Settings

CACHE_TTL_S = 10.0
"""How long a key found in the store is trusted without asking again (a revoked key lives this long)."""
CACHE_MAX = 4096
MAX_KEY_CHARS = 512

_UNAUTHORIZED = {"www-authenticate": "Bearer"}


class Authenticator:
    """Resolves `Authorization: Bearer <key>` to a tenant; one per app, so no state is global."""

    def __init__(self, *, cache_ttl_s: float = CACHE_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = cache_ttl_s
        self._clock = clock
        self._configured: tuple[Settings, tuple[tuple[bytes, str], ...]] | None = None
        self._cache: dict[str, tuple[str, float]] = {}

    async def tenant(self, request: Request, services: Services) -> str:
        """The caller's tenant; raises 401 for a missing, malformed or unknown key."""
        key = _bearer(request.headers.get("authorization"))
        if key is None:
            raise ApiError(401, "unauthorized", "missing bearer API key", headers=_UNAUTHORIZED)
        digest = hash_key(key)
        tenant = self._from_settings(services.settings, digest) or await self._from_store(services, digest)
        if tenant is None:
            raise ApiError(401, "unauthorized", "unknown API key", headers=_UNAUTHORIZED)
        return tenant

    def _from_settings(self, settings: Settings, digest: str) -> str | None:
        presented = digest.encode()
        found: str | None = None
        # Compare against every configured key without stopping early: timing says nothing of which.
        for expected, tenant in self._configured_keys(settings):
            if hmac.compare_digest(expected, presented):
                found = tenant
        return found

    def _configured_keys(self, settings: Settings) -> tuple[tuple[bytes, str], ...]:
        # Hashed once per Settings object (in practice once per process), on first use.
        if self._configured is None or self._configured[0] is not settings:
            pairs = tuple(pair.partition(":") for pair in settings.api_keys)
            self._configured = (settings, tuple((hash_key(key).encode(), t) for t, _, key in pairs))
        return self._configured[1]

    async def _from_store(self, services: Services, digest: str) -> str | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant = await services.store.tenant_for_key(digest)
        if tenant is not None:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()  # crude bound; a refill costs one indexed read per key
            self._cache[digest] = (tenant, now + self._ttl)
        return tenant


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_CHARS:
        return None
    return key
