"""Each injected fault fires as configured, shows in the stats, and is reproducible under a seed."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.fixtures.sandbox import RunningSandbox, StartSandbox, wait_until

ZERO_TIME = "0001-01-01T00:00:00Z"


async def post(
    http: aiohttp.ClientSession,
    sb: RunningSandbox,
    body: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, Any, dict[str, str]]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with http.post(
        f"{sb.url}/api/v1/task", json=body or sb.body(), headers=sb.headers, timeout=timeout
    ) as response:
        return response.status, await response.json(), dict(response.headers)


async def get(http: aiohttp.ClientSession, sb: RunningSandbox, task_id: str) -> tuple[int, Any]:
    async with http.get(f"{sb.url}/api/v1/task/{task_id}", headers=sb.headers) as response:
        return response.status, await response.json()


async def test_create_5xx_answers_an_error_and_creates_nothing(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(create_5xx=1.0)
    status, envelope, _ = await post(sandbox_http, sb)

    assert status in (500, 502, 503) and envelope == {
        "code": status,
        "data": None,
        "message": envelope["message"],
    }
    stats = sb.engine.stats_json()
    assert sb.engine.tasks == {} and stats["faults"]["create_5xx"] == 1
    assert stats["creates_rejected"] == {str(status): 1}


async def test_create_lost_cuts_the_answer_but_the_task_exists(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(create_lost=1.0)
    with pytest.raises(aiohttp.ClientError):
        await post(sandbox_http, sb)

    (task,) = sb.engine.tasks.values()
    assert task.create_response == "lost" and await sb.wait_final(task.task_id) == "completed"
    assert sb.engine.stats_json()["faults"]["create_lost"] == 1


async def test_create_hold_outlasts_the_client_timeout_but_the_task_exists(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(create_hold=1.0, create_hold_s=30.0)
    with pytest.raises(TimeoutError):
        await post(sandbox_http, sb, timeout_s=0.3)

    await wait_until(lambda: len(sb.engine.tasks) == 1, what="the held task")  # the client may quit first
    (row,) = sb.engine.tasks_json()
    assert row["create_response"] == "held" and "create_hold" in row["faults"]


async def test_a_short_hold_still_answers(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox(create_hold=1.0, create_hold_s=0.2)
    status, envelope, _ = await post(sandbox_http, sb)
    assert status == 200 and envelope["data"]["status"] == ""  # the documented create answer


async def test_a_burst_rejects_the_next_creates_whatever_the_faults_become(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(burst_429=1.0, burst_429_length=3, burst_429_retry_after_s=2.0)
    status, envelope, headers = await post(sandbox_http, sb)
    async with sandbox_http.patch(f"{sb.url}/_sandbox/faults", json={"burst_429": 0.0}) as response:
        assert (await response.json())["burst_429"] == 0.0

    later = [(await post(sandbox_http, sb))[0] for _ in range(3)]

    assert status == 429 and envelope["code"] == 429 and headers["Retry-After"] == "2"
    assert later == [429, 429, 200]
    assert sb.engine.stats_json()["faults"]["burst_429"] == 1


async def test_task_fail_ends_failed_with_a_real_error(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(task_fail=1.0)
    _, created, _ = await post(sandbox_http, sb)
    task_id = created["data"]["task_id"]
    assert await sb.wait_final(task_id) == "failed"

    _, envelope = await get(sandbox_http, sb, task_id)
    task = envelope["data"]
    assert task["output"] is None and task["meta"]["started_at"] != ZERO_TIME
    assert task["error"]["code"] != 0 and "too many requests" not in task["error"]["message"]
    assert task["meta"]["usage"]["consume"] == 0
    assert sb.engine.stats_json()["faults"]["task_fail"] == 1


async def test_task_fail_retryable_looks_like_a_rate_limit(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(task_fail_retryable=1.0)
    _, created, _ = await post(sandbox_http, sb)
    task_id = created["data"]["task_id"]
    await sb.wait_final(task_id)

    _, envelope = await get(sandbox_http, sb, task_id)
    task = envelope["data"]
    assert task["status"] == "failed" and task["meta"]["started_at"] == ZERO_TIME
    assert task["error"]["message"] == "too many requests" and task["error"]["raw_message"] == "too many requests"
    assert task["logs"] == ["too many requests, please retry later"]
    assert sb.engine.stats_json()["faults"]["task_fail_retryable"] == 1


async def test_get_5xx_answers_an_error(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox()
    _, created, _ = await post(sandbox_http, sb)
    sb.engine.set_faults(get_5xx=1.0)

    status, envelope = await get(sandbox_http, sb, created["data"]["task_id"])

    assert status in (500, 502, 503) and envelope["code"] == status and envelope["data"] is None
    assert sb.engine.stats_json()["faults"]["get_5xx"] == 1


async def test_output_expire_early_serves_a_url_that_is_already_gone(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    sb = await sandbox(output_expire_early=1.0)
    _, created, _ = await post(sandbox_http, sb)
    task_id = created["data"]["task_id"]
    await sb.wait_final(task_id)

    _, envelope = await get(sandbox_http, sb, task_id)
    async with sandbox_http.get(envelope["data"]["output"]["image_url"]) as response:
        assert response.status == 404
    assert sb.engine.stats_json()["faults"]["output_expire_early"] == 1


@pytest.mark.parametrize(("patch", "field"), [({"webhook_drop": 2}, "webhook_drop"), ({"no_such": 1}, "no_such")])
async def test_bad_fault_patch_is_400_naming_the_field(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession, patch: dict[str, Any], field: str
) -> None:
    sb = await sandbox()
    async with sandbox_http.patch(f"{sb.url}/_sandbox/faults", json=patch) as response:
        assert response.status == 400 and field in (await response.json())["error"]
    assert sb.engine.faults.webhook_drop == 0.0


async def run_script(http: aiohttp.ClientSession, sb: RunningSandbox) -> list[tuple[int, str]]:
    """Twelve creates in sequence; what each answered and how its task ended."""
    outcomes = []
    for n in range(12):
        status, envelope, _ = await post(http, sb, sb.body(prompt=f"thing {n % 4}"))
        final = await sb.wait_final(envelope["data"]["task_id"]) if status == 200 else ""
        outcomes.append((status, final))
    return outcomes


async def test_same_seed_same_decisions(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    faults: dict[str, Any] = {"create_5xx": 0.4, "task_fail": 0.4}
    first = await run_script(sandbox_http, await sandbox(seed=42, **faults))
    second = await run_script(sandbox_http, await sandbox(seed=42, **faults))
    other = await run_script(sandbox_http, await sandbox(seed=43, **faults))

    assert first == second
    assert first != other
    assert {status for status, _ in first} > {200} and {"completed", "failed"} <= {f for _, f in first}


async def test_decisions_do_not_depend_on_request_interleaving(
    sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession
) -> None:
    # Different prompts arrive in opposite orders: each request's fate must follow it, not its position.
    prompts = [f"p{n}" for n in range(8)]

    async def fates(order: list[str]) -> dict[str, int]:
        sb = await sandbox(seed=7, create_5xx=0.5)
        return {p: (await post(sandbox_http, sb, sb.body(prompt=p)))[0] for p in order}

    assert await fates(prompts) == await fates(prompts[::-1])


async def test_stats_count_rejections_by_status(sandbox: StartSandbox, sandbox_http: aiohttp.ClientSession) -> None:
    sb = await sandbox()
    async with sandbox_http.post(f"{sb.url}/api/v1/task", json=sb.body()) as response:
        assert response.status == 401
    await post(sandbox_http, sb, {"model": "x"})
    await wait_until(lambda: sum(sb.engine.stats.creates_rejected.values()) == 2)

    async with sandbox_http.get(f"{sb.url}/_sandbox/stats") as response:
        stats = await response.json()
    assert stats["creates_rejected"] == {"400": 1, "401": 1} and stats["tasks_created"] == 0
