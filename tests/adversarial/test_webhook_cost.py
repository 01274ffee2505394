"""A wrong webhook secret costs no more than a right one (issue 13, finding 2).

Counted, not timed: every HMAC segflow computes over a job id is counted (hmac.new is wrapped
for the test), while real webhooks go to segflow on a real port with four master keys. A job id
that is not one segflow makes is refused before any HMAC; a secret for any attempt, right or
wrong, costs one HMAC per master key; the path is bounded. The CPU figures are in `make bench`
(benchmarks/webhook_cost.py).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from service.states import State
from service.webhook_secrets import webhook_path
from tests.fixtures.api import Api, submitted
from tests.fixtures.sandbox import wait_until
from tests.fixtures.segflow import WEBHOOK_KEY, Starter
from tests.integration.test_webhooks import body_for

KEYS = (
    WEBHOOK_KEY,
    "second-master-key-0123456789ab",
    "third-master-key-0123456789abc",
    "fourth-master-key-0123456789ab",
)


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    app = await segflow("http://127.0.0.1:9", roles=(), webhook_keys=KEYS, max_attempts=3)
    async with aiohttp.ClientSession() as http:
        yield Api(app, http)


@pytest.fixture
def hmacs(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], int]:
    """How many HMACs have been computed over a message naming `job_id`."""
    messages: list[bytes] = []
    real = hmac.new

    def counting(key: bytes, msg: bytes | None = None, digestmod: Any = "") -> hmac.HMAC:
        if msg is not None:
            messages.append(bytes(msg))
        return real(key, msg, digestmod)

    monkeypatch.setattr(hmac, "new", counting)
    return lambda job_id: sum(job_id.encode()[:36] in m for m in messages)


async def deliver(api: Api, path: str, secret: str, body: Any = b"{}") -> int:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    answer = await api.call(
        "POST", path, tenant=None, data=raw, headers={"x-webhook-secret": secret, "content-type": "application/json"}
    )
    return answer.status


async def test_a_malformed_job_id_costs_no_hmac(api: Api, hmacs: Callable[[str], int]) -> None:
    for job_id in ("j" * 60_000, "not-a-job", str(uuid.uuid4()).upper(), str(uuid.uuid4()) + "x"):
        for path in (f"/webhooks/qubico/{job_id}", f"/webhooks/qubico/{job_id}/1"):
            status = await deliver(api, path, "x" * 43)
            assert status in (404, 414, 431), (path[:60], status)  # refused; 4xx before any work
            assert hmacs(job_id) == 0, path[:60]
    assert (await api.call("GET", "/healthz", tenant=None)).status == 200


@pytest.mark.parametrize("attempt", [1, 2, 7, 30])
async def test_a_wrong_secret_costs_one_hmac_per_key_whatever_the_attempt(
    api: Api, hmacs: Callable[[str], int], attempt: int
) -> None:
    job_id = (await api.submit())["jobs"][0]["job_id"]
    assert await deliver(api, webhook_path(job_id, attempt), "x" * 43) == 401
    assert hmacs(job_id) == len(KEYS)
    assert await deliver(api, webhook_path(job_id, 0), "x" * 43) == 404  # no attempt 0, no HMAC
    assert await deliver(api, webhook_path(job_id, 33), "x" * 43) == 404
    assert hmacs(job_id) == len(KEYS)


async def test_a_right_secret_costs_the_same_and_is_applied(api: Api, hmacs: Callable[[str], int]) -> None:
    job_id = (await api.submit())["jobs"][0]["job_id"]
    job, _task = await submitted(api.services, job_id)
    body = body_for(api.app, job)
    secret = api.services.secrets.derive(job_id, 1)
    before = hmacs(job_id)
    assert await deliver(api, webhook_path(job_id, 1), secret, body) == 200
    assert hmacs(job_id) - before == len(KEYS)  # every key tried, though the first one matched
    found = await api.services.store.get_job(job_id)
    assert found is not None and found.state is State.FETCHING


async def test_the_old_endpoint_shape_still_works_for_tasks_in_flight_and_costs_at_most_max_attempts(
    api: Api, hmacs: Callable[[str], int]
) -> None:
    job_id = (await api.submit())["jobs"][0]["job_id"]
    assert await deliver(api, f"/webhooks/qubico/{job_id}", "x" * 43) == 401
    assert hmacs(job_id) == 3 * len(KEYS)  # max_attempts (3) candidates, not 32
    job, _task = await submitted(api.services, job_id)
    secret = api.services.secrets.derive(job_id, 1)
    assert await deliver(api, f"/webhooks/qubico/{job_id}", secret, body_for(api.app, job)) == 200
    found = await api.services.store.get_job(job_id)
    assert found is not None and found.state is State.FETCHING


async def test_the_old_endpoint_shape_can_be_turned_off(segflow: Starter) -> None:
    app = await segflow("http://127.0.0.1:9", roles=(), legacy_webhook_path=False)
    async with aiohttp.ClientSession() as http:
        api = Api(app, http)
        job_id = (await api.submit())["jobs"][0]["job_id"]
        job, _task = await submitted(api.services, job_id)
        secret = api.services.secrets.derive(job_id, 1)
        assert await deliver(api, f"/webhooks/qubico/{job_id}", secret, body_for(app, job)) == 404
        assert await deliver(api, webhook_path(job_id, 1), secret, body_for(app, job)) == 200


async def test_the_submitter_hands_out_endpoints_with_the_attempt(sandbox: Any, segflow: Starter) -> None:
    """Through the sandbox: the endpoint each task was created with names its job and attempt,
    and the job completes through it."""
    sb = await sandbox()
    sf = await segflow(sb.url)
    job_id = (await sf.client.create_batch([{"image": sb.sample_url(), "prompt": "car"}]))["jobs"][0]["job_id"]

    async def done() -> bool:
        job = await sf.store.get_job(job_id)
        return job is not None and job.state is State.SUCCEEDED

    await wait_until(done, timeout_s=20, what="the job to succeed")
    endpoints = [t.request.webhook_endpoint for t in sb.engine.tasks.values()]
    assert endpoints == [f"{sf.url}/webhooks/qubico/{job_id}/1"]
