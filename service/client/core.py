"""What both clients share: the operations (method and path of each OpenAPI operation id), how a
call becomes a request, the retry policy, and how an answer becomes a value or a typed error."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from service.client.errors import ApiError, ConnectionFailed, error_for
from service.retry_after import retry_after_s

# operation id -> (method, path): every route of the OpenAPI document (a test checks both ways).
OPERATIONS: dict[str, tuple[str, str]] = {
    "createBatch": ("POST", "/v1/batches"),
    "listBatches": ("GET", "/v1/batches"),
    "getBatch": ("GET", "/v1/batches/{batch_id}"),
    "listBatchJobs": ("GET", "/v1/batches/{batch_id}/jobs"),
    "getBatchManifest": ("GET", "/v1/batches/{batch_id}/manifest"),
    "getJob": ("GET", "/v1/jobs/{job_id}"),
    "getJobMask": ("GET", "/v1/jobs/{job_id}/mask"),
    "getSignedMask": ("GET", "/links/masks/{job_id}/{idx}.png"),
    "getJobEvents": ("GET", "/v1/jobs/{job_id}/events"),
    "cancelJob": ("POST", "/v1/jobs/{job_id}/cancel"),
    "retryJob": ("POST", "/v1/jobs/{job_id}/retry"),
    "uploadInput": ("POST", "/v1/inputs"),
    "estimateBatch": ("POST", "/v1/estimates"),
    "getBudget": ("GET", "/v1/budget"),
    "setBudget": ("PUT", "/v1/budget"),
    "getInput": ("GET", "/inputs/{name}"),
    "healthz": ("GET", "/healthz"),
    "readyz": ("GET", "/readyz"),
    "metrics": ("GET", "/metrics"),
    "openapi": ("GET", "/openapi.json"),
    "createSubscription": ("POST", "/v1/subscriptions"),
    "listSubscriptions": ("GET", "/v1/subscriptions"),
    "getSubscription": ("GET", "/v1/subscriptions/{sub_id}"),
    "updateSubscription": ("PATCH", "/v1/subscriptions/{sub_id}"),
    "deleteSubscription": ("DELETE", "/v1/subscriptions/{sub_id}"),
    "replaySubscription": ("POST", "/v1/subscriptions/{sub_id}/replay"),
    "rotateSubscriptionSecret": ("POST", "/v1/subscriptions/{sub_id}/rotate-secret"),
    "sendTestEvent": ("POST", "/v1/subscriptions/{sub_id}/test"),
    "callbackKeys": ("GET", "/v1/callback-keys"),
    "listEvents": ("GET", "/v1/events"),
    "eventDeliveries": ("GET", "/v1/events/{event_id}/deliveries"),
    "replayEvent": ("POST", "/v1/events/{event_id}/replay"),
    "deadDeliveries": ("GET", "/v1/deliveries/dead"),
}
# Repeating these cannot do anything twice (PATCH sets values; cancel and retry are guarded by
# the job's state).
_SAFE_METHODS = frozenset({"GET", "HEAD", "DELETE", "PATCH"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Call:
    operation: str
    path_params: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] | None = None
    json_body: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bool = False  # the answer's bytes, not JSON

    def request(self) -> tuple[str, str, dict[str, Any]]:
        method, template = OPERATIONS[self.operation]
        path = template.format(**{k: quote(v, safe="") for k, v in self.path_params.items()})
        kwargs: dict[str, Any] = {"headers": dict(self.headers)}
        if self.params:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.json_body is not None:
            kwargs["content"] = json.dumps(self.json_body).encode()
            kwargs["headers"]["content-type"] = "application/json"
        elif self.content is not None:
            kwargs["content"] = self.content
        return method, path, kwargs

    @property
    def repeatable(self) -> bool:
        """Whether sending it again after an ambiguous failure cannot do anything twice."""
        method = OPERATIONS[self.operation][0]
        return method in _SAFE_METHODS or any(k.lower() == "idempotency-key" for k in self.headers)


def new_idempotency_key() -> str:
    return f"segflow-client-{uuid.uuid4()}"


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `retries` more tries, waiting base * 2^n (+-50% jitter, at most `max_wait_s`), or what
    Retry-After says (at most `max_retry_after_s`; longer and the error is raised instead)."""

    retries: int = 4
    base_s: float = 0.5
    max_wait_s: float = 30.0
    max_retry_after_s: float = 120.0

    def wait(self, attempt: int, call: Call, response: httpx.Response | None, error: Exception | None) -> float | None:
        """Seconds to wait before trying again after `attempt` (0-based) failed; None: give up."""
        if attempt >= self.retries:
            return None
        if error is not None:
            # Never sent (refused, no route): always safe. Otherwise only if repeatable.
            if not (isinstance(error, httpx.ConnectError | httpx.ConnectTimeout) or call.repeatable):
                return None
        elif response is None or response.status_code not in RETRY_STATUSES:
            return None
        elif response.status_code != 429 and not call.repeatable:
            return None  # a 5xx after a POST without a key may have done it: do not do it twice
        backoff = min(self.max_wait_s, self.base_s * 2.0**attempt) * random.uniform(0.5, 1.5)
        told = retry_after_s(str(response.headers.get("retry-after") or "")) if response is not None else None
        if told is not None:
            if told > self.max_retry_after_s:
                return None
            return max(told, 0.0)
        return backoff


def result(call: Call, response: httpx.Response) -> Any:
    """The answer's value (JSON, bytes, or None for 204), or its typed error."""
    if response.status_code >= 400:
        raise api_error(response)
    if response.status_code == 204 or not response.content:
        return None
    if call.raw:
        return response.content
    return response.json()


def api_error(response: httpx.Response) -> ApiError:
    code, message = "http_error", response.reason_phrase or "error"
    detail: list[Any] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error", code))
        message = str(body.get("message", message))
        detail = body.get("detail") or []
    cls = error_for(response.status_code)
    return cls(
        response.status_code,
        code,
        message,
        detail,
        response.headers.get("x-request-id"),
        retry_after_s(response.headers.get("retry-after")),
    )


def connection_failed(base_url: str, error: Exception) -> ConnectionFailed:
    return ConnectionFailed(f"cannot reach segflow at {base_url}: {type(error).__name__}: {error}")
