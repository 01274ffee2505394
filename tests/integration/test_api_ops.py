"""Probes, metrics and the OpenAPI document: open without a key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from starlette.applications import Starlette

from service.api import api_routes, exception_handlers
from tests.fixtures.api import Api, running_api
from tests.fixtures.segflow import Starter
from tests.fixtures.servers import serve_asgi

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as running:
        yield running


async def test_healthz_and_readyz_answer_without_a_key(api: Api) -> None:
    assert (await api.call("GET", "/healthz", tenant=None)).body == {"status": "ok"}
    ready = (await api.call("GET", "/readyz", tenant=None)).body
    assert ready["status"] == "ready" and ready["creates"]["paused"] is False


async def test_readyz_fails_and_routes_answer_503_when_the_store_is_down(api: Api) -> None:
    await api.services.store.close()
    ready = await api.call("GET", "/readyz", tenant=None)
    assert (ready.status, ready.error) == (503, "not_ready")
    answer = await api.call("GET", "/v1/jobs/j")
    assert (answer.status, answer.error, answer.headers["retry-after"]) == (503, "store_unavailable", "1")
    assert (await api.call("GET", "/healthz", tenant=None)).status == 200


async def test_metrics_are_prometheus_text(api: Api) -> None:
    answer = await api.call("GET", "/metrics", tenant=None)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE segflow_transitions_total counter" in answer.raw


async def test_openapi_document_is_served(api: Api) -> None:
    answer = await api.call("GET", "/openapi.json", tenant=None)
    assert answer.status == 200 and answer.body["openapi"].startswith("3.1")
    assert "/v1/batches" in answer.body["paths"]


async def test_unknown_routes_and_methods_answer_in_the_error_shape() -> None:
    app = Starlette(routes=api_routes(), exception_handlers=exception_handlers())
    async with serve_asgi(app) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/v1/nothing-here") as resp:
            assert (resp.status, (await resp.json())["error"]) == (404, "not_found")
        async with http.delete(url + "/v1/batches") as resp:
            assert (resp.status, (await resp.json())["error"]) == (405, "method_not_allowed")
            assert "POST" in resp.headers["allow"]
