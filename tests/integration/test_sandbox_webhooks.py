"""Webhooks from the sandbox to a real listener: content, retries, and the delivery faults."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from tests.fixtures.sandbox import RunningSandbox, StartSandbox, WebhookRecorder, wait_until


async def create(http: aiohttp.ClientSession, sb: RunningSandbox, **body: Any) -> str:
    async with http.post(f"{sb.url}/api/v1/task", json=sb.body(**body), headers=sb.headers) as response:
        assert response.status == 200
        return str((await response.json())["data"]["task_id"])


async def test_webhooks_follow_the_task_and_carry_the_secret(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox()
    task_id = await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint(), secret="hook-secret")

    received = await webhook_recorder.wait_for(3)
    async with sandbox_http.get(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as response:
        final = (await response.json())["data"]

    assert sorted(webhook_recorder.statuses()) == ["completed", "pending", "processing"]
    assert all(r.headers["x-webhook-secret"] == "hook-secret" for r in received)
    completed = next(r.json for r in received if r.status == "completed")
    assert isinstance(completed["timestamp"], int) and completed["data"] == final


async def test_no_secret_means_no_secret_header_and_processing_can_be_skipped(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(processing_webhook=False)
    task_id = await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())
    await sb.wait_final(task_id)
    await wait_until(lambda: sb.engine.stats.webhooks["delivered"] == 2, what="two deliveries")

    assert sorted(webhook_recorder.statuses()) == ["completed", "pending"]
    assert all("x-webhook-secret" not in r.headers for r in webhook_recorder.received)


async def test_failed_delivery_is_retried_with_the_same_body(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    # A long task, so only the creation webhook is in play while the listener answers 500, 500, 200.
    sb = await sandbox(latency_min_s=10.0, latency_max_s=10.0, webhook_retries=3)
    webhook_recorder.script = [500, 500]
    await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    received = await webhook_recorder.wait_for(3)
    await wait_until(lambda: sb.engine.stats.webhooks["delivered"] == 1, what="the delivery")

    assert [r.answered for r in received] == [500, 500, 200]
    assert len({r.body for r in received}) == 1
    webhooks = sb.engine.stats_json()["webhooks"]
    assert webhooks["sent"] == 3 and webhooks["retried"] == 2 and webhooks["failed"] == 0


async def test_delivery_gives_up_after_the_retries(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(latency_min_s=10.0, latency_max_s=10.0, webhook_retries=1)
    webhook_recorder.script = [503, 503, 503]
    await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    await wait_until(lambda: sb.engine.stats.webhooks["failed"] == 1, what="the delivery to fail")
    assert len(webhook_recorder.received) == 2


async def test_unreachable_endpoint_counts_as_failed(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(webhook_retries=0, processing_webhook=False)
    task_id = await create(sandbox_http, sb, endpoint="http://127.0.0.1:9/closed-port")
    await sb.wait_final(task_id)
    await wait_until(lambda: sb.engine.stats.webhooks["failed"] == 2, what="both deliveries to fail")


async def test_drop_sends_nothing(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(webhook_drop=1.0)
    task_id = await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())
    await sb.wait_final(task_id)

    stats = sb.engine.stats_json()
    assert stats["webhooks"]["dropped"] == 3 and stats["faults"]["webhook_drop"] == 3
    # A dropped webhook is never scheduled, so none can still be on its way.
    assert webhook_recorder.received == [] and stats["webhooks"]["sent"] == 0


async def test_duplicate_sends_each_webhook_twice(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(webhook_duplicate=1.0, processing_webhook=False)
    await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    received = await webhook_recorder.wait_for(4)

    assert Counter(webhook_recorder.statuses()) == {"pending": 2, "completed": 2}
    assert len({r.body for r in received}) == 2  # the copies are byte-identical
    assert sb.engine.stats_json()["webhooks"]["duplicated"] == 2


async def test_reorder_delivers_processing_after_completed(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(webhook_reorder=1.0)
    await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    await webhook_recorder.wait_for(3)

    statuses = webhook_recorder.statuses()
    assert statuses.index("processing") > statuses.index("completed")
    assert sb.engine.stats_json()["webhooks"]["reordered"] == 1


async def test_delay_holds_each_webhook_back(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    sb = await sandbox(webhook_delay=1.0, webhook_delay_s=0.3, processing_webhook=False)
    started = asyncio.get_running_loop().time()
    await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    received = await webhook_recorder.wait_for(2)

    assert min(r.at for r in received) - started >= 0.3
    assert sb.engine.stats_json()["webhooks"]["delayed"] == 2


async def test_a_stuck_listener_blocks_neither_tasks_nor_answers(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, webhook_recorder: WebhookRecorder
) -> None:
    webhook_recorder.gate = asyncio.Event()  # the listener never answers until teardown
    sb = await sandbox()
    task_id = await create(sandbox_http, sb, endpoint=webhook_recorder.endpoint())

    assert await sb.wait_final(task_id) == "completed"
    async with sandbox_http.get(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as response:
        assert response.status == 200
