"""The small findings of issue 13 (6 and 8): bad cursors, short upstream keys, the log redactor.
(No `server` header and no Host-built redirect: tests/adversarial/test_connections.py.)"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest

from service.context import open_services
from service.logs import REDACTED, Redactor
from service.settings import ConfigError, load_settings
from tests.fixtures.api import Api, running_api
from tests.fixtures.segflow import Starter


@pytest.fixture
async def api(segflow: Starter) -> AsyncIterator[Api]:
    async with running_api(segflow) as a:
        yield a


def cursor(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


BAD_JOB_CURSORS = [
    cursor({"after": 2**63}),
    cursor({"after": 2**64 + 5}),
    cursor({"after": -(2**63)}),
    cursor({"after": 1.5}),
    cursor({"after": "1"}),
    cursor([1]),
    "not base64!",
    "A" * 5000,
]
BAD_BATCH_CURSORS = [
    cursor({"before": [1e300, "b"]}),
    cursor({"before": [2**63, "b"]}),
    cursor({"before": [1.0, "b" * 5000]}),
    cursor({"before": [-1, "b"]}),
    cursor({"after": 3}),
]


async def test_any_bad_cursor_is_a_400_in_the_error_envelope_and_a_real_one_pages(api: Api) -> None:
    batch_id = (await api.submit(n=3))["batch_id"]
    for bad in BAD_JOB_CURSORS:
        answer = await api.call("GET", f"/v1/batches/{batch_id}/jobs?cursor={bad}")
        assert answer.status == 400, (bad[:40], answer.raw)
        assert answer.error == "invalid_cursor" and answer.paths == ["cursor"]
        assert answer.headers["x-request-id"]
    for bad in BAD_BATCH_CURSORS:
        answer = await api.call("GET", f"/v1/batches?cursor={bad}")
        assert answer.status == 400, (bad[:40], answer.raw)
        assert answer.error == "invalid_cursor" and answer.headers["x-request-id"]
    first = await api.call("GET", f"/v1/batches/{batch_id}/jobs?limit=2")
    rest = await api.call("GET", f"/v1/batches/{batch_id}/jobs?limit=2&cursor={first.body['next_cursor']}")
    assert rest.status == 200 and len(rest.body["jobs"]) == 1


@pytest.mark.parametrize("key", ["", "k", "short-key-15chr"])
async def test_a_short_upstream_key_outside_the_sandbox_stops_start_up(key: str) -> None:
    settings = load_settings(
        None,
        {"SEGFLOW_UPSTREAM_API_KEY": key, "SEGFLOW_WEBHOOK_KEYS": "w" * 32, "SEGFLOW_DATABASE_URL": "sqlite:///x.db"},
    )
    with pytest.raises(ConfigError, match="SEGFLOW_UPSTREAM_API_KEY"):
        await open_services(settings)


def test_the_redactor_replaces_whole_secret_values_only() -> None:
    redact = Redactor(["k", "upstream-key-0123456789abcdef"])
    event = redact(
        None,
        "info",
        {
            "event": "kind words keep their k-less letters",
            "url": "https://api.example/v1?key=upstream-key-0123456789abcdef&x=1",
            "header": "Bearer upstream-key-0123456789abcdef",
            "alone": "k",
        },
    )
    assert event["event"] == "kind words keep their k-less letters"
    assert event["url"] == f"https://api.example/v1?key={REDACTED}&x=1"
    assert event["header"] == f"Bearer {REDACTED}"
    assert event["alone"] == REDACTED
