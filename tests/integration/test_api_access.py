"""Who may call what: bearer keys from the configuration and from the store, and tenants that
cannot see, list, cancel or retry each other's batches and jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.api.keys import hash_key, new_key
from tests.fixtures.api import Api, failed, running_api
from tests.fixtures.segflow import Starter

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


V1_ROUTES = [
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches/b"),
    ("GET", "/v1/batches/b/jobs"),
    ("GET", "/v1/jobs/j"),
    ("GET", "/v1/jobs/j/mask"),
    ("GET", "/v1/jobs/j/events"),
    ("POST", "/v1/jobs/j/cancel"),
    ("POST", "/v1/jobs/j/retry"),
]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
async def test_missing_key_is_unauthorized(api: Api, method: str, path: str) -> None:
    answer = await api.call(method, path, tenant=None)
    assert (answer.status, answer.error) == (401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_unknown_or_malformed_key_is_unauthorized(api: Api) -> None:
    for header in ["Bearer " + "z" * 32, "Basic YWNtZTpwdw==", "Bearer", "acme-key-0123456789abcdef"]:
        answer = await api.call("GET", "/v1/batches/b", tenant=None, headers={"authorization": header})
        assert (answer.status, answer.error) == (401, "unauthorized"), header


async def test_key_created_in_the_store_works_for_its_tenant(api: Api) -> None:
    key = new_key()
    assert key.startswith("sk_") and len(key) > 40
    await api.services.store.add_api_key("initech", hash_key(key), "test key")
    created = await api.call(
        "POST",
        "/v1/batches",
        key=key,
        json={"items": [{"image": "https://example.com/a.png", "prompt": "cat"}]},
    )
    assert created.status == 202
    batch = await api.call("GET", f"/v1/batches/{created.body['batch_id']}", key=key)
    assert batch.status == 200
    stored = await api.services.store.get_batch(created.body["batch_id"])
    assert stored is not None and stored.tenant == "initech"
    other = await api.call("GET", f"/v1/batches/{created.body['batch_id']}")  # as acme
    assert other.status == 404


async def test_another_tenants_batch_and_jobs_are_not_found_and_unchanged(api: Api) -> None:
    created = await api.submit(n=2, tenant="acme")
    batch_id, job_id = created["batch_id"], created["jobs"][0]["job_id"]
    failed_id = created["jobs"][1]["job_id"]
    await failed(api.services, failed_id)
    for method, path in [
        ("GET", f"/v1/batches/{batch_id}"),
        ("GET", f"/v1/batches/{batch_id}/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/mask"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{failed_id}/retry"),
    ]:
        answer = await api.call(method, path, tenant="globex")
        assert (answer.status, answer.error) == (404, "not_found"), path
    states = [(await api.services.store.get_job(j)) for j in (job_id, failed_id)]
    assert [s.state.value for s in states if s] == ["queued", "failed"]


async def test_request_id_is_echoed_or_made_up(api: Api) -> None:
    given = await api.call("GET", "/healthz", headers={"x-request-id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = await api.call("GET", "/healthz", headers={"x-request-id": "bad id\twith tab"})
    assert made.headers["x-request-id"] not in ("", "bad id\twith tab")
