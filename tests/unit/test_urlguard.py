from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from service.urlguard import GuardedResolver, UrlRefused, check_url, is_public

HOSTS = frozenset({"img.theapi.app"})


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
        "fc00::1",
    ],
)
def test_non_public_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://img.theapi.app/x.png", "scheme"),
        ("http://img.theapi.app/x.png", "scheme"),  # https only in production
        ("https://evil.example/x.png", "not an allowed output host"),
        ("https://img.theapi.app.evil.example/x.png", "not an allowed output host"),
        ("https://user:pw@img.theapi.app/x.png", "credentials"),
        ("https:///x.png", "no host"),
    ],
)
def test_output_urls_outside_the_rules_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UrlRefused, match=reason):
        check_url(url, allowed_hosts=HOSTS, allow_private=False, https_only=True)


def test_allowed_host_and_its_subdomains_pass() -> None:
    check_url("https://img.theapi.app/temp/a.png", allowed_hosts=HOSTS, allow_private=False, https_only=True)
    check_url("https://cdn.img.theapi.app/a.png", allowed_hosts=HOSTS, allow_private=False, https_only=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_private_literals_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UrlRefused, match="private"):
        check_url(url, allowed_hosts=None, allow_private=False, https_only=False)
    check_url(url, allowed_hosts=None, allow_private=True, https_only=False)


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses, like a rebinding DNS server would."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0) for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_names_resolving_only_to_private_addresses_are_refused_at_connect_time() -> None:
    guard = GuardedResolver(allow_private=False, inner=FixedResolver("127.0.0.1", "10.0.0.1"))
    with pytest.raises(OSError, match="private"):
        await guard.resolve("rebind.example", 443)


async def test_private_answers_are_dropped_and_public_ones_kept() -> None:
    guard = GuardedResolver(allow_private=False, inner=FixedResolver("127.0.0.1", "8.8.8.8"))
    assert [r["host"] for r in await guard.resolve("mixed.example", 443)] == ["8.8.8.8"]


async def test_sandbox_mode_keeps_loopback() -> None:
    guard = GuardedResolver(allow_private=True, inner=FixedResolver("127.0.0.1"))
    assert [r["host"] for r in await guard.resolve("localhost", 80)] == ["127.0.0.1"]
