"""Bearer keys: configured keys and store keys resolve to tenants; store lookups are cached briefly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from service.api.auth import Authenticator
from service.api.errors import ApiError
from service.api.keys import hash_key, new_key
from service.settings import Settings

SETTINGS = Settings(api_keys=("acme:" + "a" * 32, "globex:" + "b" * 32))


class _Store:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.lookups = 0

    async def tenant_for_key(self, key_hash: str) -> str | None:
        self.lookups += 1
        return self.keys.get(key_hash)


def request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def services(store: _Store) -> Any:
    return SimpleNamespace(settings=SETTINGS, store=store)


def test_keys_are_random_prefixed_and_hashed_as_sha256_hex() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("sk_")
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


async def test_configured_keys_name_their_tenant_without_the_store() -> None:
    store = _Store({})
    auth = Authenticator()
    assert await auth.tenant(request("Bearer " + "b" * 32), services(store)) == "globex"
    assert await auth.tenant(request("bearer " + "a" * 32), services(store)) == "acme"
    assert store.lookups == 0


async def test_store_keys_are_cached_until_the_ttl_passes() -> None:
    key = new_key()
    store = _Store({hash_key(key): "initech"})
    now = [0.0]
    auth = Authenticator(cache_ttl_s=10.0, clock=lambda: now[0])
    for _ in range(3):
        assert await auth.tenant(request(f"Bearer {key}"), services(store)) == "initech"
    assert store.lookups == 1
    now[0] = 11.0
    await auth.tenant(request(f"Bearer {key}"), services(store))
    assert store.lookups == 2


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Token abc", "Bearer " + "z" * 32, "Bearer " + "a" * 600])
async def test_missing_or_unknown_keys_are_unauthorized(header: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        await Authenticator().tenant(request(header), services(_Store({})))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
