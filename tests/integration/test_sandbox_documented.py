"""The provider's documented behaviours, each a sandbox switch, on a real port, read through
segflow's own upstream client: staged creates, external cancels in both spellings, pending-only
cancel with its documented answer, outputs under every key, bad images failing after the create,
a redirect from a second host name, the task history and the account balance."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import aiohttp
import pytest

from service.upstream.client import UpstreamClient
from service.upstream.errors import UpstreamRateLimited, UpstreamRejected
from service.upstream.wire import INLINE_PREFIX, CreateRequest, FailureKind, TaskStatus
from tests.fixtures.sandbox import ImageHost, RunningSandbox, StartSandbox, WebhookRecorder, image_bytes, wait_until

SLOW = {"latency_min_s": 0.3, "latency_max_s": 0.3}


async def create(client: UpstreamClient, sb: RunningSandbox, prompt: str = "car", **kw: Any) -> str:
    snap = await client.create_task(CreateRequest(kw.pop("image", None) or sb.sample_url(), prompt, **kw))
    return snap.task_id


async def final(client: UpstreamClient, sb: RunningSandbox, task_id: str) -> Any:
    await sb.wait_final(task_id)
    return await client.get_task(task_id)


async def test_over_limit_creates_are_staged_visible_on_get_and_in_webhooks_then_run(
    sandbox: StartSandbox, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(concurrency_limit=1, over_limit="stage", **SLOW)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        first = await create(client, sb, "one")
        second = await create(client, sb, "two", webhook_endpoint=webhook_recorder.endpoint("two"), webhook_secret="s")
        staged = await client.get_task(second)
        assert staged.status is TaskStatus.STAGED and not staged.status.is_final
        await webhook_recorder.wait_for(1)
        assert webhook_recorder.statuses()[0] == "staged"
        assert (await final(client, sb, first)).status is TaskStatus.COMPLETED
        assert (await final(client, sb, second)).status is TaskStatus.COMPLETED
    tasks = sb.engine.tasks
    assert tasks[second].started_at is not None and tasks[first].ended_at is not None
    assert tasks[second].started_at >= tasks[first].ended_at  # it waited for the slot


async def test_over_limit_creates_are_429_when_told_to(sandbox: StartSandbox) -> None:
    sb = await sandbox(concurrency_limit=1, over_limit="429", **SLOW)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        await create(client, sb)
        with pytest.raises(UpstreamRateLimited):
            await create(client, sb, "again")


async def test_create_answer_has_the_documented_empty_status_read_as_pending(sandbox: StartSandbox) -> None:
    sb = await sandbox(**SLOW)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        snap = await client.create_task(CreateRequest(sb.sample_url(), "car"))
    assert snap.raw_status == "" and snap.status is TaskStatus.PENDING


@pytest.mark.parametrize(
    ("variant", "key"),
    [("temporary_urls", "temporary_image_urls"), ("base64_outputs", "image_base64s"), (None, "image_urls")],
)
async def test_outputs_under_each_key_and_several_masks_are_all_read(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, variant: str | None, key: str
) -> None:
    switches = {variant: 1.0} if variant else {}
    sb = await sandbox(multi_mask=1.0, multi_mask_count=3, **switches)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        task_id = await create(client, sb)
        snap = await final(client, sb, task_id)
    task = sb.engine.tasks[task_id]
    assert task.output_key == key and len(task.mask_sha256s) == 3 and len(set(task.mask_sha256s)) == 3
    assert len(snap.output_urls) == 3
    for url, sha in zip(snap.output_urls, task.mask_sha256s, strict=True):
        if key == "image_base64s":
            assert url.startswith(INLINE_PREFIX)
            data = base64.b64decode(url.removeprefix(INLINE_PREFIX))
        else:
            async with sandbox_http.get(url) as resp:
                data = await resp.read()
        assert hashlib.sha256(data).hexdigest() == sha


async def test_external_cancels_end_tasks_in_either_spelling_unbilled(sandbox: StartSandbox) -> None:
    sb = await sandbox(external_cancel=1.0, credit_usd=1.0)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        ids = [await create(client, sb, f"thing {i}") for i in range(8)]
        snaps = [await final(client, sb, t) for t in ids]
        balance = await client.account_info()
    assert {s.status for s in snaps} == {TaskStatus.CANCELLED}
    assert {s.raw_status for s in snaps} == {"cancelled", "canceled"}  # both spellings turn up
    assert balance.equivalent_in_usd == pytest.approx(1.0)  # nothing billed


async def test_cancel_only_while_pending_with_the_documented_answer(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(latency_min_s=2.0, latency_max_s=2.0)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        pending = await create(client, sb, "one")
        async with sandbox_http.delete(f"{sb.url}/api/v1/task/{pending}", headers=sb.headers) as resp:
            assert resp.status == 200 and await resp.json() == {"code": 200, "message": f"task {pending} canceled"}
        assert (await client.get_task(pending)).raw_status == "canceled"
        running = await create(client, sb, "two")
        await wait_until(lambda: sb.engine.tasks[running].status == "processing", 5, "processing")
        answer = await client.cancel_task(running)
        assert not answer.accepted and "processing" in answer.reason
        assert (await final(client, sb, running)).status is TaskStatus.COMPLETED  # it ran on


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("wide.png", image_bytes(4000, 10), "at most 3072 px"),
        ("anim.gif", image_bytes(20, 20, "GIF"), "JPG or PNG"),
        ("absent.png", None, "HTTP 404"),
    ],
)
async def test_bad_images_are_accepted_then_fail_as_input_errors(
    sandbox: StartSandbox, image_host: ImageHost, name: str, data: bytes | None, reason: str
) -> None:
    sb = await sandbox()
    url = image_host.add(name, data) if data else f"{image_host.url}/{name}"
    async with UpstreamClient(sb.url, sb.api_key) as client:
        task_id = await create(client, sb, image=url)
        snap = await final(client, sb, task_id)
    assert snap.status is TaskStatus.FAILED and snap.error is not None and reason in snap.error.message
    assert snap.failure_kind is FailureKind.INPUT


async def test_outputs_through_a_redirect_from_a_second_host_name(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(output_redirect_host="localhost")
    async with UpstreamClient(sb.url, sb.api_key) as client:
        snap = await final(client, sb, await create(client, sb))
    url = snap.output_urls[0]
    assert url.startswith("http://localhost:")
    async with sandbox_http.get(url, allow_redirects=False) as hop:
        assert hop.status == 302 and hop.headers["location"].startswith(f"{sb.url}/temp/")
    async with sandbox_http.get(hop.headers["location"]) as resp:
        assert hashlib.sha256(await resp.read()).hexdigest() == sb.engine.tasks[snap.task_id].mask_sha256


async def test_history_pages_filters_by_time_and_refuses_large_pages(sandbox: StartSandbox) -> None:
    sb = await sandbox()
    async with UpstreamClient(sb.url, sb.api_key) as client:
        started = time.time() - 1
        ids = [await create(client, sb, f"thing {i}") for i in range(5)]
        for t in ids:
            await sb.wait_final(t)
        first = await client.list_tasks(started, time.time() + 1, page=1, page_size=2)
        rest = [await client.list_tasks(started, time.time() + 1, page=p, page_size=2) for p in (2, 3)]
        assert first.total == 5 and [len(p.tasks) for p in (first, *rest)] == [2, 2, 1]
        assert [r.task_id for p in (first, *rest) for r in p.tasks] == ids
        assert all(r.status is TaskStatus.COMPLETED and r.usage_consume for r in first.tasks)
        assert (await client.list_tasks(0, started - 10)).tasks == ()
        with pytest.raises(ValueError, match="page_size"):
            await client.list_tasks(started, time.time(), page_size=101)
    async with aiohttp.ClientSession() as http:
        url = f"{sb.url}/api/open/tasks/histories?page_size=101"
        async with http.get(url, headers=sb.headers) as resp:
            assert resp.status == 400 and "at most 100" in (await resp.json())["message"]


async def test_balance_goes_down_with_spend_and_402_once_spent(sandbox: StartSandbox) -> None:
    sb = await sandbox(credit_usd=0.02)
    async with UpstreamClient(sb.url, sb.api_key) as client:
        assert (await client.account_info()).equivalent_in_usd == pytest.approx(0.02)
        await final(client, sb, await create(client, sb, "one"))
        info = await client.account_info()
        assert info.equivalent_in_usd == pytest.approx(0.01) and info.account_id
        await final(client, sb, await create(client, sb, "two"))
        assert (await client.account_info()).equivalent_in_usd == pytest.approx(0.0)
        with pytest.raises(UpstreamRejected) as refused:
            await create(client, sb, "three")
    assert refused.value.status == 402


async def test_history_and_account_need_the_key(sandbox: StartSandbox) -> None:
    sb = await sandbox()
    async with UpstreamClient(sb.url, "wrong-key") as client:
        for call in (client.account_info(), client.list_tasks(0, 1)):
            with pytest.raises(UpstreamRejected) as err:
                await call
            assert err.value.status == 401
