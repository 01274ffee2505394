"""The client library against a running segflow (and the sandbox) on 127.0.0.1: the sync client
in a worker thread, the async one in the loop, through a proxy that loses answers and says 429,
so retries, the automatic Idempotency-Key and Retry-After are seen working as a user relies on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    NotFound,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    ValidationFailed,
)
from service.serving import serve_in_loop
from tests.fixtures.processes import free_port
from tests.fixtures.segflow import TENANT_KEYS
from tests.integration.test_flow import wait_done

QUICK_RETRY = RetryPolicy(retries=3, base_s=0.05, max_wait_s=0.2)
# The client is what is tested here, not the store: one database is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Proxy:
    """Forwards to segflow; `fault(request, n)` may answer instead (before or after forwarding)."""

    target: str
    url: str = ""
    seen: list[tuple[float, str, str, dict[str, str]]] = field(default_factory=list)
    fault: Callable[[Request, int], tuple[str, Response] | None] = lambda request, n: None

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append((time.monotonic(), request.method, request.url.path, dict(request.headers)))
        decided = self.fault(request, len(self.seen))
        if decided and decided[0] == "before":
            return decided[1]
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        async with httpx.AsyncClient() as http:
            answer = await http.request(
                request.method,
                self.target + request.url.path,
                params=request.query_params,
                content=body,
                headers=headers,
            )
        if decided:  # "after": segflow did it, the caller never hears
            return decided[1]
        return Response(answer.content, answer.status_code, headers={"content-type": answer.headers["content-type"]})


@asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[Proxy]:
    p = Proxy(url)
    app = Starlette(routes=[Route("/{path:path}", p.handle, methods=["GET", "POST", "PATCH", "DELETE"])])
    async with serve_in_loop(app) as listening:
        p.url = listening
        yield p


async def test_the_sync_client_submits_follows_and_downloads(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    items = [{"image": sb.sample_url(), "prompt": f"p{i}"} for i in range(3)]

    def use() -> tuple[Any, ...]:
        with Client(sf.url, TENANT_KEYS["acme"]) as client:
            batch = client.create_batch(items)
            deadline = time.monotonic() + 30
            while (summary := client.get_batch(batch["batch_id"]))["done"] < 3:
                assert time.monotonic() < deadline, summary
                time.sleep(0.1)
            jobs = client.all_batch_jobs(batch["batch_id"])
            mask = client.get_job_mask(jobs[0]["job_id"])
            events = list(client.iter_events(type="job.succeeded"))
            return batch, summary, jobs, mask, events

    batch, summary, jobs, mask, events = await asyncio.to_thread(use)
    assert summary["counts"]["succeeded"] == 3
    assert {j["job_id"] for j in jobs} == {j["job_id"] for j in batch["jobs"]}
    assert mask.startswith(b"\x89PNG")
    assert len(events) == 3


async def test_typed_errors_for_refusals_and_an_unreachable_server(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with AsyncClient(sf.url, TENANT_KEYS["acme"], retry=QUICK_RETRY) as client:
        with pytest.raises(NotFound) as missing:
            await client.get_job("00000000-0000-4000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.request_id
        with pytest.raises(ValidationFailed) as invalid:
            await client.create_batch([{"image": "not a url", "prompt": ""}])
        assert {d["path"] for d in invalid.value.detail} >= {"items[0].image"}
    async with AsyncClient(sf.url, "wrong-key") as stranger:
        with pytest.raises(Unauthorized):
            await stranger.list_batches()
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed, match="cannot reach segflow"):
        await asyncio.to_thread(lambda: Client(closed, "k", retry=QUICK_RETRY).healthz())


async def test_a_lost_answer_is_retried_with_the_same_idempotency_key_and_pays_once(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with proxy_to(sf.url) as proxy:
        # The first POST reaches segflow, which accepts the batch; the answer is lost (502).
        proxy.fault = lambda request, n: ("after", Response(status_code=502)) if n == 1 else None
        async with AsyncClient(proxy.url, TENANT_KEYS["acme"], retry=QUICK_RETRY) as client:
            batch = await client.create_batch([{"image": "https://images.example.com/a.png", "prompt": "car"}])
            listed = await client.list_batches()
    posts = [headers["idempotency-key"] for _, method, _, headers in proxy.seen if method == "POST"]
    assert len(posts) == 2 and posts[0] == posts[1]  # sent twice, with one key
    assert [b["batch_id"] for b in listed["batches"]] == [batch["batch_id"]]  # accepted once
    assert sum((await sf.store.job_counts()).values()) == 1


async def test_retry_after_is_honoured_and_a_lasting_429_is_a_typed_error(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with proxy_to(sf.url) as proxy:
        busy = Response(status_code=429, headers={"retry-after": "1"})
        proxy.fault = lambda request, n: ("before", busy) if n == 1 else None
        async with AsyncClient(proxy.url, TENANT_KEYS["acme"], retry=QUICK_RETRY) as client:
            assert (await client.list_subscriptions())["subscriptions"] == []
            first, second = proxy.seen[0][0], proxy.seen[1][0]
            assert second - first >= 0.95  # the policy alone would wait 0.05-0.1 s
        proxy.fault = lambda request, n: ("before", busy)
        once = RetryPolicy(retries=1, base_s=0.05)
        async with AsyncClient(proxy.url, TENANT_KEYS["acme"], retry=once) as client:
            with pytest.raises(RateLimited) as limited:
                await client.list_subscriptions()
            assert limited.value.retry_after_s == 1.0


async def test_a_post_without_a_key_is_not_repeated_after_an_ambiguous_failure(segflow: Any) -> None:
    sf = await segflow("http://127.0.0.1:9", roles=())
    async with proxy_to(sf.url) as proxy:
        proxy.fault = lambda request, n: ("after", Response(status_code=502))
        async with AsyncClient(proxy.url, TENANT_KEYS["acme"], retry=QUICK_RETRY) as client:
            with pytest.raises(Exception, match="502"):
                await client.create_subscription("https://hooks.example.com/x")
    assert len(proxy.seen) == 1  # a second subscription could have been made: not retried


async def test_every_image_with_every_prompt(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    batch = await sf.client.create_batch(images=[sb.sample_url()], prompts=["car", "road"])
    summary = await wait_done(sf, batch["batch_id"], 30)
    assert summary["total"] == summary["counts"]["succeeded"] == 2
