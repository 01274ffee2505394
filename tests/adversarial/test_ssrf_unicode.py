# ruff: noqa: RUF001  (look-alike characters are what these tests are about)
"""SSRF through hosts the HTTP client normalises (issue 13, finding 1): Unicode dots and digits
that yarl's IDNA / UTS-46 step turns into a literal address, for every kind of outbound URL, and
the connect-time check on the address of every connection, literal addresses included.

Spellings that would connect anywhere are loopback ones (127.0.0.1 and the test servers on it);
link-local and private spellings are checked at the policy level only, never connected to.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from service.download import DownloadInvalid, DownloadPolicy, download_image
from service.jobs import Change, TaskUpsert
from service.settings import Settings
from service.states import Event
from service.urlguard import GuardedSession, UrlPolicy, UrlRefused, is_public, output_policy
from service.webhook_secrets import webhook_path
from tests.adversarial.test_ssrf import (
    DATA,
    LEGACY_OUTPUT_HOST,
    OUTPUT_HOST,
    STRICT,
    LocalDns,
    OutputHost,
    output_host,
    session_for,
)
from tests.fixtures.api import IMAGE, Api, running_api
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import Starter

__all__ = ["output_host"]  # the fixture, used here by name

# The spellings of 127.0.0.1 (full-width dots, ideographic dots, circled digits, full-width
# digits), mixed forms, and `localhost` in full-width letters.
LOOPBACK_SPELLINGS = [
    "127．0．0．1",
    "127。0。0。1",
    "127｡0｡0｡1",
    "①②⑦.0.0.1",
    "１２７.0.0.1",
    "１２７．０．０．①",
    "⑫⑦.0.0.1",
    "127.0.0.1。",
    "ｌｏｃａｌｈｏｓｔ",
]
# The same tricks on link-local and private addresses: policy level only.
PRIVATE_SPELLINGS = [
    "169．254．169．254",
    "①⑥⑨.②⑤④.①⑥⑨.②⑤④",
    "１０.0.0.1",
    "⑩.0.0.1",
    "192。168。0。1",
    "１７２.16.0.1",
]


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as a:  # production URL rules
        yield a


async def stored(api: Api) -> tuple[Any, ...]:
    store = api.services.store
    return (
        dict(await store.job_counts()),
        await store.list_subscriptions("acme"),
        await store.list_events("acme", since=0.0, limit=100),
    )


async def test_unicode_spellings_are_refused_for_images_callbacks_and_subscriptions(api: Api) -> None:
    before = await stored(api)
    for host in LOOPBACK_SPELLINGS + PRIVATE_SPELLINGS:
        url = f"https://{host}/cat.png"
        image = await api.call("POST", "/v1/batches", json={"items": [{"image": url, "prompt": "car"}]})
        callback = await api.call(
            "POST", "/v1/batches", json={"items": [{"image": IMAGE, "prompt": "car"}], "callback_url": url}
        )
        subscription = await api.call("POST", "/v1/subscriptions", json={"url": url})
        for answer, path in ((image, "items[0].image"), (callback, "callback_url"), (subscription, "url")):
            assert answer.status == 422, (host, path, answer.status, answer.raw)
            assert answer.paths == [path], answer.body
    assert await stored(api) == before


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS[:-1] + PRIVATE_SPELLINGS)
def test_the_output_policy_refuses_unicode_spellings_before_the_host_list(host: str) -> None:
    with pytest.raises(UrlRefused, match="non-ASCII"):
        STRICT.urls.check(f"https://{host}/temp/mask.png")


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_a_redirect_to_a_unicode_spelling_is_not_followed(
    output_host: tuple[OutputHost, ssl.SSLContext], host: str
) -> None:
    server, client_tls = output_host
    target = f"https://{host}:{server.port}/inner/x.png"
    first = f"https://{OUTPUT_HOST}:{server.port}/to?where={aiohttp.helpers.quote(target, safe='')}"
    started: list[str] = []
    async with session_for(LocalDns({OUTPUT_HOST: ["127.0.0.1"]}), client_tls, started) as http:
        with pytest.raises(DownloadInvalid):
            await download_image(http, first, STRICT)
    assert server.inner_hits == []
    assert len(started) == 1


async def test_output_urls_with_unicode_spellings_from_a_signed_webhook_are_never_fetched(
    segflow: Starter, output_host: tuple[OutputHost, ssl.SSLContext]
) -> None:
    """Production settings: the upstream's completed webhook names outputs on 127.0.0.1 spelled
    in Unicode; each job fails `output_invalid` and the loopback server behind them is never hit."""
    server, _ = output_host
    sf = await segflow(
        "http://127.0.0.1:9",
        roles=("fetcher",),
        upstream_is_sandbox=False,
        upstream_api_key="production-key-0123456789",
        allow_private_image_urls=False,
    )
    async with aiohttp.ClientSession() as http:
        api = Api(sf, http)
        jobs = []
        for n, host in enumerate(LOOPBACK_SPELLINGS[:4]):
            job_id = (await api.submit())["jobs"][0]["job_id"]
            task_id = f"task-{n}"
            for change in (
                Change(Event.CLAIM, "test", set={"lease_owner": "test", "lease_until": 1e12}),
                Change(
                    Event.CREATED, "test", set={"task_id": task_id}, task=TaskUpsert(task_id, 1, "created", "pending")
                ),
            ):
                assert (await sf.store.transition(job_id, lambda _j, _t, c=change: c)).applied
            body = copy.deepcopy(orjson.loads((DATA / "webhook-completed.json").read_bytes()))
            body["data"].update(task_id=task_id, output={"image_url": f"https://{host}:{server.port}/inner/{n}.png"})
            secret = sf.services.secrets.derive(job_id, 1)
            answer = await api.call(
                "POST",
                webhook_path(job_id, 1),
                tenant=None,
                data=orjson.dumps(body),
                headers={"x-webhook-secret": secret, "content-type": "application/json"},
            )
            assert answer.status == 200, answer.raw
            jobs.append(job_id)

        async def all_failed() -> bool:
            views = [(await api.call("GET", f"/v1/jobs/{j}")).body for j in jobs]
            return all(v["state"] == "failed" for v in views)

        await wait_until(all_failed, timeout_s=20, what="every job failed")
        for j in jobs:
            view = (await api.call("GET", f"/v1/jobs/{j}")).body
            assert view["error"]["code"] == "output_invalid", view
            assert "non-ASCII" in view["error"]["message"], view
    assert server.hits == []


# Output hosts and redirects (issue 15) --------------------------------------------------------


def test_the_default_output_hosts_are_the_providers_documented_ones() -> None:
    policy = output_policy(Settings())
    for url in (
        "https://img.theapi.app/temp/0f3c.png",
        "https://img.theapi.app/ephemeral/0f3c.png",
        "https://img.midjourneyapi.xyz/mj/0f3c.png",
    ):
        policy.check(url)
    for url in (
        "https://img.theapi.app.evil.example/a.png",
        "http://img.theapi.app/temp/a.png",
        "https://example.com/",
    ):
        with pytest.raises(UrlRefused):
            policy.check(url)


def redirect_chain(port: int, hops: int, last: str) -> str:
    """A URL that redirects `hops` times, alternating between the two output host names."""
    url = last
    for n in range(hops):
        host = LEGACY_OUTPUT_HOST if n % 2 == 0 else OUTPUT_HOST
        url = f"https://{host}:{port}/to?where={aiohttp.helpers.quote(url, safe='')}"
    return url


@pytest.mark.parametrize("hops", [1, 3])
async def test_redirects_between_output_hosts_are_followed_up_to_the_limit(
    output_host: tuple[OutputHost, ssl.SSLContext], hops: int
) -> None:
    server, client_tls = output_host
    policy = DownloadPolicy(urls=output_policy(Settings()), max_bytes=65_536, timeout_s=5, max_redirects=3)
    dns = LocalDns({OUTPUT_HOST: ["127.0.0.1"], LEGACY_OUTPUT_HOST: ["127.0.0.1"]})
    started: list[str] = []
    first = redirect_chain(server.port, hops, f"https://{OUTPUT_HOST}:{server.port}/mask.png")
    async with session_for(dns, client_tls, started) as http:
        got = await download_image(http, first, policy)
    assert (got.width, got.height) == (8, 8)
    assert len(started) == hops + 1 and URL(started[0]).host == (LEGACY_OUTPUT_HOST if hops % 2 else OUTPUT_HOST)


async def test_a_redirect_past_the_limit_or_off_the_host_list_is_not_followed(
    output_host: tuple[OutputHost, ssl.SSLContext],
) -> None:
    server, client_tls = output_host
    policy = DownloadPolicy(urls=output_policy(Settings()), max_bytes=65_536, timeout_s=5, max_redirects=3)
    dns = LocalDns({OUTPUT_HOST: ["127.0.0.1"], LEGACY_OUTPUT_HOST: ["127.0.0.1"], "cdn.example.org": ["127.0.0.1"]})
    started: list[str] = []
    async with session_for(dns, client_tls, started) as http:
        with pytest.raises(DownloadInvalid, match="too many redirects"):
            await download_image(
                http, redirect_chain(server.port, 4, f"https://{OUTPUT_HOST}:{server.port}/inner/a.png"), policy
            )
        assert len(started) == 4
        with pytest.raises(DownloadInvalid, match="not an allowed output host"):
            await download_image(
                http, redirect_chain(server.port, 1, f"https://cdn.example.org:{server.port}/inner/b.png"), policy
            )
    assert server.inner_hits == []
    assert "cdn.example.org" not in dns.asked


# The connect-time check ---------------------------------------------------------------------


class Listener:
    """A plain TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0

    async def __aenter__(self) -> Listener:
        async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            w.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "127．0．0．1", "①②⑦.0.0.1", "localhost"])
async def test_the_guarded_session_never_connects_to_a_loopback_address(host: str) -> None:
    """Even when a URL skipped the acceptance check (stored under older rules, or a bug), the one
    guarded session refuses the socket before connect(): literal addresses included, which aiohttp
    connects to without asking the resolver."""
    async with Listener() as listener:
        guarded = GuardedSession(allow_private=False, limit=4)
        try:
            # Refused at connect time (or, for the legacy numeric forms, by aiohttp itself).
            with pytest.raises(aiohttp.ClientError, match=r"refused|private|canonical"):
                async with guarded.get().get(f"http://{host}:{listener.port}/", timeout=aiohttp.ClientTimeout(5)):
                    pass
        finally:
            await guarded.close()
        assert listener.accepted == 0
        # The same request through a session that allows private addresses connects: the set-up works.
        allowed = GuardedSession(allow_private=True, limit=4)
        try:
            with pytest.raises(aiohttp.ClientError):  # the listener hangs up without answering
                async with allowed.get().get(f"http://127.0.0.1:{listener.port}/", timeout=aiohttp.ClientTimeout(5)):
                    pass
        finally:
            await allowed.close()
        assert listener.accepted >= 1


# The property ---------------------------------------------------------------------------------

_DIGITS = {str(d): [str(d), chr(0xFF10 + d)] for d in range(10)}  # ASCII and full-width
_DOTS = [".", "．", "。", "｡"]
_CIRCLED = {str(n): chr(0x2460 + n - 1) for n in range(1, 21)} | {"0": "⓪"}
_NON_PUBLIC = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@st.composite
def spelled_private_ipv4(draw: st.DrawFn) -> str:
    """A non-public IPv4 address in a random spelling: per octet ASCII, full-width or circled
    digits, or hex; any Unicode dot; the legacy short and integer forms; a trailing dot."""
    net = ipaddress.ip_network(draw(st.sampled_from(_NON_PUBLIC)))
    address = net[draw(st.integers(0, net.num_addresses - 1))]
    octets = [int(o) for o in str(address).split(".")]
    form = draw(st.sampled_from(["quad", "short", "integer"]))
    if form == "integer":
        parts = [str(int(address))]
    elif form == "short" and octets[1] == octets[2] == 0:
        parts = [str(octets[0]), str(octets[3])]
    else:
        parts = [str(o) for o in octets]

    def spell(part: str) -> str:
        style = draw(st.sampled_from(["digits", "circled", "hex"]))
        if style == "circled" and part in _CIRCLED:
            return _CIRCLED[part]
        if style == "hex" and len(parts) == 4:
            return hex(int(part))
        return "".join(draw(st.sampled_from(_DIGITS[c])) for c in part)

    host = "".join(spell(p) + (draw(st.sampled_from(_DOTS)) if i < len(parts) - 1 else "") for i, p in enumerate(parts))
    return host + draw(st.sampled_from(["", ".", "。"]))


def connects_to(url: str) -> str | None:
    """The address the client would connect to for `url` when its host is a literal: the host as
    yarl hands it to aiohttp, read by the system's own numeric-host parser (no DNS)."""
    try:
        host = URL(url).raw_host
    except ValueError:
        return None
    if not host:
        return None
    try:
        info = socket.getaddrinfo(host.rstrip("."), 443, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return str(info[0][4][0])


POLICIES = [
    UrlPolicy(allow_private=False, https_only=False),  # images
    UrlPolicy(allow_private=False, https_only=True),  # callbacks, subscriptions
    STRICT.urls,  # outputs and redirect hops
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    host=st.one_of(spelled_private_ipv4(), st.text(alphabet="0123456789０１２７①②⑦⓪.．。x", min_size=1, max_size=16))
)
def test_any_host_the_client_would_connect_to_a_non_public_address_is_refused(host: str) -> None:
    url = f"https://{host}/a.png"
    address = connects_to(url)
    if address is None or is_public(address):
        return  # a name (DNS decides, at connect time) or a public address: not this property's concern
    for policy in POLICIES:
        with pytest.raises(UrlRefused):
            policy.check(url)
