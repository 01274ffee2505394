"""SSRF: every URL segflow is handed or fetches, through the public API and the workers.

What tests/unit/test_urlguard.py, tests/integration/test_download.py and test_callbacks.py already
cover is not repeated: plain private literals, `localhost`, the allow-list, the guard resolver in
isolation, and a callback name resolving to this machine. Here: the other spellings of private
addresses at the API (IPv6 ULA and mapped forms, legacy numeric IPv4, trailing dots); output URLs
that reach the fetcher through a signed webhook in production mode; redirects from an allowed
output host (a real TLS server on 127.0.0.1 that answers 302) to private addresses, with the
download configured to refuse private addresses so the redirect is what is tested; and names whose
DNS answers are private, through the real guard resolver on a real connection.

No test here sends a packet anywhere but 127.0.0.1: each session carries a trace hook that fails
the test before any request to another host would start.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.download import DownloadInvalid, DownloadPolicy, DownloadTransient, download_image
from service.jobs import Change, TaskUpsert
from service.states import Event
from service.urlguard import GuardedResolver, UrlPolicy, is_public
from tests.fixtures.api import IMAGE, Api, png, running_api
from tests.fixtures.segflow import Starter

DATA = Path(__file__).resolve().parents[1] / "data" / "upstream"
OUTPUT_HOST = "img.theapi.app"  # the production output host, resolved to 127.0.0.1 by the tests' DNS
LEGACY_OUTPUT_HOST = "img.midjourneyapi.xyz"  # the provider's earlier output host

# Spellings of non-public addresses not covered by the existing tests.
PRIVATE_HOSTS = [
    "[fd00::1]",  # IPv6 unique local
    "[fc00::5]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
    "[::ffff:a9fe:a9fe]",  # IPv4-mapped 169.254.169.254, in hex
    "[::ffff:10.0.0.1]",
    "[::]",
    "[fe80::1%25eth0]",  # link-local with a zone id
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of the metadata address
    "0.0.0.0",
    "0",
    "127.1",  # legacy IPv4 forms the resolver still reads as 127.0.0.1
    "2130706433",
    "0x7f000001",
    "017700000001",
    "0177.0.0.1",
    "127.000.000.001",
    "169.254.169.254.",  # a trailing dot
    "localhost.",
    "LOCALHOST",
    "api.localhost",
    "100.64.0.1",  # carrier-grade NAT
    "198.18.0.1",  # benchmarking
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


@pytest.mark.parametrize("host", PRIVATE_HOSTS)
async def test_private_spellings_are_refused_everywhere_a_client_gives_a_url(api: Api, host: str) -> None:
    before = await stored(api)
    url = f"https://{host}/cat.png"
    image = await api.call("POST", "/v1/batches", json={"items": [{"image": url, "prompt": "car"}]})
    cross = await api.call("POST", "/v1/batches", json={"images": [IMAGE, url], "prompts": ["car"]})
    callback = await api.call(
        "POST", "/v1/batches", json={"items": [{"image": IMAGE, "prompt": "car"}], "callback_url": url}
    )
    subscription = await api.call("POST", "/v1/subscriptions", json={"url": url})
    for answer, path in (
        (image, "items[0].image"),
        (cross, "images[1]"),
        (callback, "callback_url"),
        (subscription, "url"),
    ):
        assert answer.status == 422, (path, answer.status, answer.raw)
        assert answer.paths == [path], answer.body
        assert "public host" in answer.body["detail"][0]["reason"]
    assert await stored(api) == before


# The tests' network: a resolver, a TLS server and a tripwire ----------------------------------


class LocalDns(AbstractResolver):
    """DNS for the tests: each name answers the addresses given, nothing else resolves."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"test DNS: no such name {host}")
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        return None


class FrontDoorResolver(AbstractResolver):
    """The allowed output hosts resolve to the test server on 127.0.0.1 (as if they were public);
    every other name goes through segflow's real guard, on the test DNS."""

    def __init__(self, dns: LocalDns) -> None:
        self.dns = dns
        self.guard = GuardedResolver(allow_private=False, inner=dns)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host in (OUTPUT_HOST, LEGACY_OUTPUT_HOST):
            return await self.dns.resolve(host, port, family)
        return await self.guard.resolve(host, port, family)

    async def close(self) -> None:
        return None


def tls_context(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for a self-signed certificate naming the output host."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, OUTPUT_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [
        x509.DNSName(OUTPUT_HOST),
        x509.DNSName(f"cdn.{OUTPUT_HOST}"),
        x509.DNSName(LEGACY_OUTPUT_HOST),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


class OutputHost:
    """A TLS server on 127.0.0.1 standing in for the output host. `/mask.png` is a mask,
    `/to?where=URL` answers 302 to URL, and `/inner/...` is what a redirect to a private address
    would reach: it must never be hit."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        if request.path == "/mask.png":
            return web.Response(body=png(8, 8), content_type="image/png")
        if request.path == "/to":
            return web.Response(status=302, headers={"location": request.query["where"]})
        return web.Response(body=png(2, 2), content_type="image/png")  # /inner/...: the prize

    @property
    def inner_hits(self) -> list[str]:
        return [h for h in self.hits if h.startswith("/inner")]


@pytest.fixture
async def output_host(tmp_path: Path) -> AsyncIterator[tuple[OutputHost, ssl.SSLContext]]:
    server_tls, client_tls = tls_context(tmp_path)
    host = OutputHost()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", host.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    host.port = runner.addresses[0][1]
    try:
        yield host, client_tls
    finally:
        await runner.cleanup()


def tripwire(allowed_hosts: set[str], started: list[str]) -> aiohttp.TraceConfig:
    """Fails the test before a request to any host outside `allowed_hosts` would even connect."""

    async def on_start(_session: Any, _ctx: Any, params: aiohttp.TraceRequestStartParams) -> None:
        started.append(str(params.url))
        assert params.url.host in allowed_hosts, f"a request to {params.url} was about to be sent"

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    return trace


STRICT = DownloadPolicy(
    urls=UrlPolicy(allow_private=False, https_only=True, allowed_hosts=frozenset({OUTPUT_HOST})),
    max_bytes=65_536,
    timeout_s=5,
)


def session_for(dns: LocalDns, client_tls: ssl.SSLContext, started: list[str]) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(resolver=FrontDoorResolver(dns), ssl=client_tls)
    allowed = {OUTPUT_HOST, f"cdn.{OUTPUT_HOST}", f"rebind.{OUTPUT_HOST}", LEGACY_OUTPUT_HOST}
    return aiohttp.ClientSession(connector=connector, trace_configs=[tripwire(allowed, started)])


async def test_the_strict_download_reaches_the_allowed_host_over_tls(
    output_host: tuple[OutputHost, ssl.SSLContext],
) -> None:
    """The set-up works: without a redirect the mask is fetched, so refusals below are the guard's."""
    host, client_tls = output_host
    started: list[str] = []
    async with session_for(LocalDns({OUTPUT_HOST: ["127.0.0.1"]}), client_tls, started) as http:
        got = await download_image(http, f"https://{OUTPUT_HOST}:{host.port}/mask.png", STRICT)
    assert (got.width, got.height) == (8, 8)


def _targets(port: int) -> list[tuple[str, type[Exception], str]]:
    inner = f"{port}/inner/x.png"
    return [
        (f"https://127.0.0.1:{inner}", DownloadInvalid, "not an allowed output host"),
        (f"https://[::1]:{inner}", DownloadInvalid, "not an allowed output host"),
        (f"https://localhost:{inner}", DownloadInvalid, "not an allowed output host"),
        ("https://169.254.169.254/latest/meta-data/", DownloadInvalid, "not an allowed output host"),
        ("https://10.0.0.1/inner/x.png", DownloadInvalid, "not an allowed output host"),
        ("https://[fd00::1]/inner/x.png", DownloadInvalid, "not an allowed output host"),
        (f"//127.0.0.1:{inner}", DownloadInvalid, "not an allowed output host"),  # scheme-relative
        (f"http://{OUTPUT_HOST}:{inner}", DownloadInvalid, "scheme http not allowed"),  # downgrade
        (f"https://x@{OUTPUT_HOST}:{inner}", DownloadInvalid, "credentials"),
        ("file:///etc/passwd", DownloadInvalid, "scheme file not allowed"),
        # An allowed name whose DNS answers are private: refused at connect time by the guard.
        (f"https://rebind.{OUTPUT_HOST}:{inner}", DownloadTransient, "private"),
    ]


@pytest.mark.parametrize("n", range(11))
async def test_a_redirect_to_a_private_address_is_not_followed(
    output_host: tuple[OutputHost, ssl.SSLContext], n: int
) -> None:
    host, client_tls = output_host
    target, error, reason = _targets(host.port)[n]
    dns = LocalDns({OUTPUT_HOST: ["127.0.0.1"], f"rebind.{OUTPUT_HOST}": ["127.0.0.1", "10.0.0.1", "169.254.169.254"]})
    started: list[str] = []
    first = f"https://{OUTPUT_HOST}:{host.port}/to?where={aiohttp.helpers.quote(target, safe='')}"
    async with session_for(dns, client_tls, started) as http:
        with pytest.raises(error, match=reason):
            await download_image(http, first, STRICT)
    assert host.hits == [f"/to?where={aiohttp.helpers.quote(target, safe='')}"] or host.hits[0].startswith("/to")
    assert host.inner_hits == []
    assert len(started) <= 2 and all(OUTPUT_HOST in u for u in started), started


@pytest.mark.parametrize(
    "answers",
    [["127.0.0.1"], ["::1"], ["10.0.0.1"], ["169.254.169.254"], ["fd00::1"], ["::ffff:127.0.0.1"], ["0.0.0.0"]],
)
async def test_an_output_name_whose_dns_answers_are_private_is_never_connected(
    output_host: tuple[OutputHost, ssl.SSLContext], answers: list[str]
) -> None:
    host, client_tls = output_host
    dns = LocalDns({OUTPUT_HOST: ["127.0.0.1"], f"cdn.{OUTPUT_HOST}": answers})
    started: list[str] = []
    async with session_for(dns, client_tls, started) as http:
        with pytest.raises(DownloadTransient, match="private"):
            await download_image(http, f"https://cdn.{OUTPUT_HOST}:{host.port}/inner/x.png", STRICT)
    assert dns.asked == [f"cdn.{OUTPUT_HOST}"]
    assert host.hits == []


# Output URLs through the webhook endpoint and the fetcher, in production mode -------------------


def loopback_name() -> str | None:
    """A name this machine's resolver maps to a non-public address (from /etc/hosts), if any."""
    for name in (socket.gethostname(), "ip6-localhost", "localhost.localdomain"):
        try:
            address = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)[0][4][0]
        except OSError:
            continue
        if not is_public(address) and ipaddress.ip_address(address.split("%")[0]).is_loopback:
            return name
    return None


async def test_output_urls_from_a_signed_webhook_never_reach_a_private_address(
    segflow: Starter, output_host: tuple[OutputHost, ssl.SSLContext]
) -> None:
    """Production settings (not the sandbox), with this machine's own name as an allowed output
    host, as if the operator had allowed a name that later resolved inside the network. The
    upstream's completed webhook hands segflow output URLs: private literals, and that name."""
    host, _client_tls = output_host
    name = loopback_name()
    if name is None:
        pytest.skip("no name on this machine resolves to a loopback address")
    sf = await segflow(
        "http://127.0.0.1:9",
        roles=("fetcher",),
        upstream_is_sandbox=False,
        upstream_api_key="production-key-0123456789",
        allow_private_image_urls=False,
        output_hosts=(OUTPUT_HOST, name),
    )
    async with aiohttp.ClientSession() as http:
        api = Api(sf, http)
        cases = {
            "name": f"https://{name}:{host.port}/inner/by-name.png",
            "literal": f"https://127.0.0.1:{host.port}/inner/literal.png",
            "metadata": "https://169.254.169.254/latest/meta-data/iam",
            "ula": "https://[fd00::1]/inner/ula.png",
        }
        jobs: dict[str, str] = {}
        for case, url in cases.items():
            job_id = (await api.submit())["jobs"][0]["job_id"]
            task_id = f"task-{case}"
            for change in (
                Change(Event.CLAIM, "test", set={"lease_owner": "test", "lease_until": 1e12}),
                Change(
                    Event.CREATED, "test", set={"task_id": task_id}, task=TaskUpsert(task_id, 1, "created", "pending")
                ),
            ):
                assert (await sf.store.transition(job_id, lambda _j, _t, c=change: c)).applied
            body = copy.deepcopy(orjson.loads((DATA / "webhook-completed.json").read_bytes()))
            body["data"].update(task_id=task_id, output={"image_url": url})
            secret = sf.services.secrets.derive(job_id, 1)
            answer = await api.call(
                "POST",
                f"/webhooks/qubico/{job_id}",
                tenant=None,
                data=orjson.dumps(body),
                headers={"x-webhook-secret": secret, "content-type": "application/json"},
            )
            assert answer.status == 200, answer.raw
            jobs[case] = job_id

        async def settled() -> dict[str, dict[str, Any]]:
            return {c: (await api.call("GET", f"/v1/jobs/{j}")).body for c, j in jobs.items()}

        deadline = asyncio.get_running_loop().time() + 20
        while True:
            views = await settled()
            literal_done = all(views[c]["state"] == "failed" for c in ("literal", "metadata", "ula"))
            name_job = await sf.store.get_job(jobs["name"])  # a retry's reason is kept on the job
            name_tried = name_job is not None and name_job.error_message is not None
            if literal_done and name_tried:
                break
            assert asyncio.get_running_loop().time() < deadline, views
            await asyncio.sleep(0.05)
    for case in ("literal", "metadata", "ula"):
        assert views[case]["error"]["code"] == "output_invalid", views[case]
    # The name is retried later (DNS may change) but never connected while it answers privately.
    assert views["name"]["state"] == "fetching"
    assert name_job is not None and "resolves only to private addresses" in (name_job.error_message or "")
    assert all(v["artifact"] is None for v in views.values())
    assert host.hits == []
