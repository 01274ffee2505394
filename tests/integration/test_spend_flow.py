"""Fair and bounded spending end to end (issue 19), on both databases, against the sandbox: spend
caps hold (the sandbox's own count of tasks proves it), bad inputs fail before any create, the
balance guard pauses and resumes creates, and a small tenant is not stuck behind a big one."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from service.states import State
from tests.fixtures.sandbox import ImageHost, RunningSandbox, image_bytes, wait_until
from tests.fixtures.segflow import TENANT_KEYS, RunningSegflow


def items(sb: RunningSandbox, n: int, name: str = "street.jpg") -> list[dict[str, Any]]:
    return [{"image": sb.sample_url(name), "prompt": f"thing {i}"} for i in range(n)]


async def batch_state(sf: RunningSegflow, batch_id: str) -> dict[str, Any]:
    summary: dict[str, Any] = await sf.client.get_batch(batch_id)
    return summary


async def settled(sf: RunningSegflow, batch_id: str, *, ended: int, timeout_s: float = 30) -> dict[str, Any]:
    """Wait until `ended` jobs of the batch are final and nothing is between queued and final."""

    async def ok() -> bool:
        c = (await batch_state(sf, batch_id))["counts"]
        between = sum(c[s.value] for s in (State.SUBMITTING, State.UNKNOWN, State.SUBMITTED, State.FETCHING))
        return between == 0 and (await batch_state(sf, batch_id))["done"] >= ended

    await wait_until(ok, timeout_s, f"{ended} jobs of {batch_id} to end")
    return await batch_state(sf, batch_id)


async def test_a_cap_of_3_cents_creates_at_most_3_tasks_and_the_rest_fail_or_wait(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, budget_recheck_s=60.0)
    failing = await sf.client.create_batch(items(sb, 10), max_spend_usd=0.03, on_budget="fail")
    done = await settled(sf, failing["batch_id"], ended=10)
    assert sb.engine.stats_json()["tasks_created"] <= 3
    assert done["counts"]["succeeded"] == 3 and done["counts"]["failed"] == 7, done["counts"]
    assert done["spend_usd"] == pytest.approx(0.03) and done["reserved_usd"] == 0
    jobs = await sf.client.all_batch_jobs(failing["batch_id"])
    assert sorted(j["error"]["code"] for j in jobs if j["state"] == "failed") == ["budget_exceeded"] * 7

    waiting = await sf.client.create_batch(items(sb, 10), max_spend_usd=0.03)
    held = await settled(sf, waiting["batch_id"], ended=3)
    assert sb.engine.stats_json()["tasks_created"] <= 6
    assert held["counts"]["succeeded"] == 3 and held["counts"]["queued"] == 7, held["counts"]
    queued = [j for j in await sf.client.all_batch_jobs(waiting["batch_id"]) if j["state"] == "queued"]
    assert {j["error"]["code"] for j in queued} == {"budget_wait"}
    assert "max_spend_usd of $0.03 is reached" in queued[0]["error"]["message"]


async def test_a_tenants_daily_cap_set_by_the_api_holds(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url, budget_recheck_s=60.0)
    budget = await sf.client.set_budget(daily_usd=0.02, monthly_usd=None)
    assert budget["effective"]["daily_usd"] == 0.02
    answer = await sf.client.create_batch(items(sb, 5))
    await settled(sf, answer["batch_id"], ended=2)
    assert sb.engine.stats_json()["tasks_created"] == 2
    budget = await sf.client.get_budget()
    assert budget["spent"]["today_usd"] == pytest.approx(0.02)


async def test_an_oversized_and_a_non_image_input_fail_without_a_create(
    sandbox: Any, segflow: Any, image_host: ImageHost
) -> None:
    sb = await sandbox()
    sf = await segflow(sb.url)
    big = image_host.add("wide.png", image_bytes(3073, 8))
    text = image_host.add("notes.png", b"<html>not an image</html>" * 100, "image/png")
    fine = image_host.add("fine.png", image_bytes(1200, 1000))
    estimate = await sf.client.estimate_batch([{"image": u, "prompt": "x"} for u in (big, text, fine)])
    assert [r["index"] for r in estimate["refused"]] == [0, 1]
    assert estimate["pixels"] == 1_200_000 and estimate["estimate_usd"] == 0.02
    answer = await sf.client.create_batch([{"image": u, "prompt": "x"} for u in (big, text, fine)])
    done = await settled(sf, answer["batch_id"], ended=3)
    assert done["counts"]["failed"] == 2 and done["counts"]["succeeded"] == 1
    assert sb.engine.stats_json()["tasks_created"] == 1  # only the fine image was paid for
    jobs = await sf.client.all_batch_jobs(answer["batch_id"])
    assert [j["error"]["code"] for j in jobs[:2]] == ["invalid_image", "invalid_image"]
    job = await sf.client.get_job(jobs[2]["job_id"])
    assert job["estimate_usd"] == 0.02 and job["price_usd"] == 0.02


async def test_the_balance_guard_pauses_on_402_and_resumes_when_the_balance_is_back(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(credit_usd=0.03)
    sf = await segflow(sb.url, balance_reserve_usd=0.0, balance_check_s=0.2)
    answer = await sf.client.create_batch(items(sb, 6))
    batch_id = answer["batch_id"]

    async with aiohttp.ClientSession() as http:

        async def ready() -> dict[str, Any]:
            async with http.get(f"{sf.url}/readyz") as resp:
                body: dict[str, Any] = await resp.json()
                return body

        async def paused() -> bool:
            return bool((await ready())["creates"]["paused"])

        await wait_until(paused, 20, "creates to pause")
        assert "402" in (await ready())["creates"]["reason"]
        async with http.get(f"{sf.url}/metrics") as resp:
            assert "segflow_creates_paused 1.0" in await resp.text()
        summary = await settled(sf, batch_id, ended=3)
        assert summary["counts"]["failed"] == 0 and summary["counts"]["queued"] == 3  # waiting, not failed
        budget = await sf.client.get_budget()
        assert budget["creates"]["paused"] is True

        sb.engine.limits.top_up(1.0)
        await wait_until(lambda: _not(paused), 20, "creates to resume")
        done = await settled(sf, batch_id, ended=6)
        assert done["counts"]["succeeded"] == 6


async def _not(predicate: Any) -> bool:
    return not await predicate()


async def test_a_small_tenants_batch_is_not_queued_behind_a_big_one(sandbox: Any, segflow: Any) -> None:
    sb = await sandbox(latency_min_s=0.05, latency_max_s=0.1)
    sf = await segflow(sb.url, max_in_flight=4, submit_batch=4)
    big = await sf.client.create_batch(items(sb, 80))
    async with aiohttp.ClientSession() as http:
        headers = {"authorization": f"Bearer {TENANT_KEYS['globex']}"}
        async with http.post(f"{sf.url}/v1/batches", json={"items": items(sb, 6)}, headers=headers) as resp:
            small = await resp.json()
        await wait_until(
            lambda: _batch_done(http, sf, small["batch_id"], headers), 60, "the small tenant's batch to finish"
        )
    # FIFO would run all 80 of acme's jobs first; shared slots finish globex's 6 early.
    acme = await batch_state(sf, big["batch_id"])
    assert acme["done"] < 40, acme["counts"]
    acme_jobs = await sf.client.all_batch_jobs(big["batch_id"])
    started = [j for j in acme_jobs if j["state"] != "queued"]
    assert [j["job_id"] for j in started] == [j["job_id"] for j in acme_jobs[: len(started)]]  # FIFO within


async def _batch_done(http: aiohttp.ClientSession, sf: RunningSegflow, batch_id: str, headers: dict[str, str]) -> bool:
    async with http.get(f"{sf.url}/v1/batches/{batch_id}", headers=headers) as resp:
        body = await resp.json()
    return bool(body["done"] == body["total"])
