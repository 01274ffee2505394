"""Outbound URL checks against SSRF: scheme, host allow-list, and no private addresses, checked on
the literal and again on every address a name resolves to at connect time (so DNS rebinding
cannot slip a private address in after the check)."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver


class UrlRefused(ValueError):
    """The URL may not be fetched; the message says which rule refused it."""


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_url(url: str, *, allowed_hosts: frozenset[str] | None, allow_private: bool, https_only: bool) -> SplitResult:
    """Parse `url` and apply every rule that does not need DNS; raises UrlRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("https",) + (() if https_only else ("http",)):
        raise UrlRefused(f"scheme {parts.scheme or '(none)'} not allowed")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused("no host")
    if parts.username or parts.password:
        raise UrlRefused("credentials in URL")
    if allowed_hosts is not None and not any(host == h or host.endswith("." + h) for h in allowed_hosts):
        raise UrlRefused(f"host {host} is not an allowed output host")
    literal = _literal(host)
    if not allow_private and (
        host == "localhost" or host.endswith(".localhost") or (literal and not is_public(literal))
    ):
        raise UrlRefused(f"host {host} is a private or loopback address")
    return parts


class GuardedResolver(AbstractResolver):
    """Resolves names, then drops every non-public address (unless private ones are allowed)."""

    def __init__(self, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return found
        kept = [r for r in found if is_public(r["host"])]
        if not kept:
            raise OSError(errno.EACCES, f"{host} resolves only to private addresses")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class GuardedSession:
    """One aiohttp session, made on first use, whose connections only reach public addresses
    (unless private ones are allowed); for workers that fetch URLs they were handed."""

    def __init__(self, allow_private: bool, limit: int, trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self._allow_private = allow_private
        self._limit = limit
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, resolver=GuardedResolver(self._allow_private))
            self._session = aiohttp.ClientSession(connector=connector, trace_configs=self._trace_configs or None)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
