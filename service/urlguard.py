"""One policy for every outbound URL (input images, callbacks, subscriptions, mask outputs and each
redirect hop), applied twice: when the URL is accepted, and on the address of every connection.

At acceptance the host is normalised exactly as the HTTP client will (yarl: IDNA / UTS-46, so
127.0.0.1 written with full-width or ideographic dots, circled or full-width digits is 127.0.0.1),
and the rules are applied to the result. A non-ASCII spelling of an address is refused outright:
no real host is written so.

At connect time the guarded session checks the address each socket is about to connect to, for
names and literal addresses alike (aiohttp connects to a literal without calling the resolver),
before a byte is sent; names resolving to private addresses are dropped by the resolver first,
so DNS rebinding cannot slip a private address in after the check.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType

    from service.settings import Settings

_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class UrlRefused(ValueError):
    """The URL may not be fetched; the message says which rule refused it."""


def is_public(address: str) -> bool:
    """True for a globally routable unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def address_of(host: str) -> str | None:
    """The address a host string names for the resolver, in any spelling getaddrinfo reads as one
    (dotted quad, IPv6, and the legacy `127.1`, `0x7f.1`, `2130706433` forms); None for a name."""
    bare = host.strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(bare.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        return None


def client_host(url: str) -> str:
    """The host the HTTP client will connect to for `url`, normalised as it normalises it."""
    try:
        host = URL(url).raw_host
    except (ValueError, TypeError) as exc:
        raise UrlRefused(f"not a valid URL ({exc})") from None
    return (host or "").lower()


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What one kind of outbound URL may be. `allowed_hosts` None: any public host."""

    allow_private: bool
    https_only: bool
    allowed_hosts: frozenset[str] | None = None

    def check(self, url: str) -> URL:
        """The parsed URL, or UrlRefused naming the rule that refuses it."""
        try:
            parsed = URL(url)
            port = parsed.port
        except (ValueError, TypeError) as exc:
            raise UrlRefused(f"not a valid URL ({exc})") from None
        schemes = ("https",) if self.https_only else ("https", "http")
        if parsed.scheme not in schemes:
            raise UrlRefused(f"scheme {parsed.scheme or '(none)'} not allowed")
        host = (parsed.raw_host or "").lower()
        if not host:
            raise UrlRefused("no host")
        if parsed.user is not None or parsed.password is not None:
            raise UrlRefused("credentials in URL")
        if port is None or not 0 < port < 65536:
            raise UrlRefused("port out of range")
        refused = _host_refusal(self, host, (urlsplit(url).hostname or "").strip("[]"))
        if refused is not None:
            raise UrlRefused(refused)
        return parsed

    def allows_address(self, address: str) -> bool:
        """The connect-time rule for the address a socket is about to reach."""
        return self.allow_private or is_public(address)


@functools.lru_cache(maxsize=4096)
def _host_refusal(policy: UrlPolicy, host: str, written: str) -> str | None:
    """Why `policy` refuses `host` (as the client normalises it; `written` as the URL spells it),
    or None. Pure, so remembered: a batch's URLs share a few hosts."""
    address = address_of(host)
    if address is not None and not written.isascii():
        return f"host {written} spells the address {address} in non-ASCII characters"
    if address is None and not _NAME.fullmatch(host):
        return f"host {host} is not a valid host name"
    name = host.rstrip(".")
    if policy.allowed_hosts is not None and not any(name == h or name.endswith("." + h) for h in policy.allowed_hosts):
        return f"host {name} is not an allowed output host"
    if not policy.allow_private and (
        name == "localhost" or name.endswith(".localhost") or (address is not None and not is_public(address))
    ):
        return f"host {name} is a private or loopback address"
    return None


def image_policy(settings: Settings) -> UrlPolicy:
    """Input images: fetched by the upstream, so http is fine; private only against a local sandbox."""
    return UrlPolicy(allow_private=settings.allow_private_image_urls, https_only=False)


def callback_policy(settings: Settings) -> UrlPolicy:
    """Batch callback URLs and subscriptions: https, unless running against the local sandbox."""
    dev = settings.allow_private_image_urls
    return UrlPolicy(allow_private=dev, https_only=not dev)


def output_policy(settings: Settings) -> UrlPolicy:
    """Mask outputs and every redirect hop from them: the configured output hosts only."""
    hosts = {h.lower().rstrip(".") for h in settings.output_hosts}
    if settings.upstream_is_sandbox:
        hosts.add(client_host(settings.upstream_url))
    private = settings.upstream_is_sandbox
    return UrlPolicy(allow_private=private, https_only=not private, allowed_hosts=frozenset(hosts))


def check_url(url: str, *, allowed_hosts: frozenset[str] | None, allow_private: bool, https_only: bool) -> URL:
    """`UrlPolicy(...).check(url)` for a one-off check."""
    return UrlPolicy(allow_private, https_only, allowed_hosts).check(url)


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


class AddressRefused(OSError):
    """A socket was about to connect to an address the policy refuses; it was never connected."""


def guarded_socket_factory(allow_private: bool) -> Callable[[AddrInfoType], socket.socket]:
    """aiohttp's `socket_factory`: called with the destination of every connection attempt, names
    and literal addresses alike, just before connect(); refuses non-public destinations."""

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        host = str(address[0])
        if not allow_private and not is_public(host):
            raise AddressRefused(errno.EACCES, f"connection to {host} refused: not a public address")
        return socket.socket(family=family, type=type_, proto=proto)

    return make


class GuardedSession:
    """The one aiohttp session for URLs segflow was handed (masks, their redirects, callbacks):
    made on first use; its connections only reach public addresses unless private ones are allowed."""

    def __init__(self, allow_private: bool, limit: int, trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self._allow_private = allow_private
        self._limit = limit
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                resolver=GuardedResolver(self._allow_private),
                socket_factory=guarded_socket_factory(self._allow_private),
            )
            # trust_env stays off: a proxy from the environment would connect on our behalf, unchecked.
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, trace_configs=self._trace_configs or None
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
