"""schemathesis against segflow's own OpenAPI document, served by a live segflow on 127.0.0.1 (a
real SQLite file, a valid API key): for every operation, generated valid and invalid requests never
get a 5xx, and every answer's status code, content type and body are the ones the document gives.

Bounded: a few examples per operation and generation mode, so the whole run takes seconds. Requests
run in a worker thread (schemathesis calls are blocking) while segflow serves in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from service.job_actions import cancel
from tests.fixtures.api import IMAGE, png, running_api
from tests.fixtures.segflow import TENANT_KEYS, Starter

EXAMPLES_PER_MODE = 12
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Finding:
    operation: str
    mode: str
    request: str
    status: int
    problem: str

    def __str__(self) -> str:
        return f"{self.operation} [{self.mode}] {self.request} -> {self.status}: {self.problem}"


def exercise(schema: Any, base_url: str, known_ids: dict[str, str]) -> tuple[list[Finding], int, set[str]]:
    """Call every operation with generated requests; every check failure, the number of calls and
    the operation ids called."""
    auth = {"authorization": f"Bearer {TENANT_KEYS['acme']}"}
    findings: list[Finding] = []
    calls = 0
    called: set[str] = set()

    def check(case: Any, mode: GenerationMode) -> None:
        nonlocal calls
        calls += 1
        called.add(case.operation.definition.raw.get("operationId", case.operation.label))
        response = case.call(base_url=base_url, headers=auth, timeout=10)
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except (AssertionError, FailureGroup) as exc:  # each check failure is a finding, not a stop
            failures = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
            text = " / ".join(str(getattr(f, "title", "")) + ": " + str(getattr(f, "message", f)) for f in failures)
            findings.append(
                Finding(
                    case.operation.label,
                    mode.value,
                    f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:120]!r}",
                    response.status_code,
                    " | ".join(text.strip().splitlines()[:6])[:600],
                )
            )

    def checker(mode: GenerationMode) -> Callable[[Any], None]:
        def one(case: Any) -> None:
            check(case, mode)

        return one

    for result in schema.get_all_operations():
        operation = result.ok()
        path_names = {p.name for p in operation.path_parameters}
        # Random ids (mostly 404s) and, where the path takes ids, ids of things that exist.
        variants: list[dict[str, str] | None] = [None]
        if path_names and path_names <= set(known_ids):
            variants.append({n: known_ids[n] for n in path_names})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in variants:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                run = settings(
                    max_examples=EXAMPLES_PER_MODE,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )(given(case=strategy)(checker(mode)))
                with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
                    run()
    return findings, calls, called


async def seed(api_call: Callable[..., Any], services: Any) -> dict[str, str]:
    """A batch, a cancelled job (an event), a subscription and an uploaded input to aim at."""
    batch = (await api_call("POST", "/v1/batches", json={"items": [{"image": IMAGE, "prompt": "car"}] * 2})).body
    job_id = batch["jobs"][0]["job_id"]
    await services.store.transition(batch["jobs"][1]["job_id"], cancel)
    events = (await api_call("GET", "/v1/events")).body["events"]
    sub = (await api_call("POST", "/v1/subscriptions", json={"url": "https://hooks.example.com/segflow"})).body
    upload = await api_call("POST", "/v1/inputs", data=png(4, 4), headers={"content-type": "image/png"})
    assert upload.status == 201, upload.raw
    return {
        "batch_id": batch["batch_id"],
        "job_id": job_id,
        "event_id": events[0]["id"],
        "sub_id": sub["id"],
        "name": upload.body["url"].rsplit("/", 1)[1],
    }


async def test_generated_requests_get_only_documented_answers(segflow: Starter) -> None:
    async with running_api(segflow) as api:
        known = await seed(api.call, api.services)
        async with aiohttp.ClientSession() as http, http.get(f"{api.app.url}/openapi.json") as resp:
            assert resp.status == 200
            document = await resp.json()
        schema = schemathesis.openapi.from_dict(document)
        loop = asyncio.get_running_loop()
        started = loop.time()
        findings, calls, called = await asyncio.to_thread(exercise, schema, api.app.url, known)
        took = loop.time() - started
        assert calls > 200, calls  # it did exercise the API
        every = {op["operationId"] for ops in document["paths"].values() for op in ops.values()}
        assert called == every, every - called  # the newer routes too (PATCH, rotate-secret, test)
        assert not findings, "\n".join(str(f) for f in findings[:40]) + f"\n({len(findings)} findings)"
        assert took < 60, took
        # Still serving after all that.
        assert (await api.call("GET", "/healthz", tenant=None)).status == 200
