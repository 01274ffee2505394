"""The segflow API client, sync (`Client`) and async (`AsyncClient`), on httpx.

Every method is one operation of the OpenAPI document (named after its operation id), built by
the same function in service/client/calls.py for both clients; answers are typed
(service/client/types.py), refusals are typed errors (service/client/errors.py), and transient
failures are retried with backoff that honours Retry-After (service/client/core.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

import httpx

from service.client import calls
from service.client import types as t
from service.client.core import Call, RetryPolicy, connection_failed, result

P = ParamSpec("P")
T = TypeVar("T")
_TRANSPORT_ERRORS = (httpx.TransportError,)


class _Op(Generic[P, T]):
    """A client method: `builder`'s parameters, answering `returns`."""

    def __init__(self, builder: Callable[P, Call], returns: Callable[..., T]) -> None:
        self.builder = builder
        self.__doc__ = builder.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _Op[P, T]: ...
    @overload
    def __get__(self, obj: Client, owner: type) -> Callable[P, T]: ...
    def __get__(self, obj: Client | None, owner: type) -> Callable[P, T] | _Op[P, T]:
        if obj is None:
            return self

        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return cast(T, obj.send(self.builder(*args, **kwargs)))

        return method


class _AsyncOp(Generic[P, T]):
    def __init__(self, builder: Callable[P, Call], returns: Callable[..., T]) -> None:
        self.builder = builder
        self.__doc__ = builder.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _AsyncOp[P, T]: ...
    @overload
    def __get__(self, obj: AsyncClient, owner: type) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: AsyncClient | None, owner: type) -> Callable[P, Awaitable[T]] | _AsyncOp[P, T]:
        if obj is None:
            return self

        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return cast(T, await obj.send(self.builder(*args, **kwargs)))

        return method


def _document(value: Any) -> dict[str, Any]:
    return dict(value)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": "segflow-client/1"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


class Client:
    """`with Client("http://127.0.0.1:8600", api_key) as sf: sf.create_batch(items=[...])`"""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.Client(base_url=self.base_url, headers=_headers(api_key), timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call) -> Any:
        method, path, kwargs = call.request()
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self._http.request(method, path, **kwargs)
            except _TRANSPORT_ERRORS as exc:
                error = exc
            wait = self.retry.wait(attempt, call, response, error)
            if wait is None:
                if error is not None:
                    raise connection_failed(self.base_url, error) from error
                assert response is not None
                return result(call, response)
            time.sleep(wait)
            attempt += 1

    def all_batch_jobs(self, batch_id: str, *, state: str | None = None) -> list[t.JobSummary]:
        """Every job of the batch (all pages)."""
        return list(self.iter_batch_jobs(batch_id, state=state))

    def iter_batch_jobs(self, batch_id: str, *, state: str | None = None) -> Iterator[t.JobSummary]:
        cursor: str | None = None
        while True:
            page = self.list_batch_jobs(batch_id, state=state, limit=500, cursor=cursor)
            yield from page["jobs"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def iter_events(self, *, type: str | None = None, since: str | None = None) -> Iterator[t.Event]:
        """Every event, newest first (all pages)."""
        cursor: str | None = None
        while True:
            page = self.list_events(type=type, since=since, limit=500, cursor=cursor)
            yield from page["events"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    create_batch = _Op(calls.create_batch, t.BatchCreated)
    list_batches = _Op(calls.list_batches, t.BatchPage)
    get_batch = _Op(calls.get_batch, t.BatchSummary)
    list_batch_jobs = _Op(calls.list_batch_jobs, t.JobPage)
    get_job = _Op(calls.get_job, t.Job)
    get_job_mask = _Op(calls.get_job_mask, bytes)
    get_batch_manifest = _Op(calls.get_batch_manifest, bytes)
    get_signed_mask = _Op(calls.get_signed_mask, bytes)
    get_job_events = _Op(calls.get_job_events, t.Timeline)
    cancel_job = _Op(calls.cancel_job, t.Job)
    retry_job = _Op(calls.retry_job, t.Job)
    upload_input = _Op(calls.upload_input, t.Input)
    estimate_batch = _Op(calls.estimate_batch, t.Estimate)
    get_budget = _Op(calls.get_budget, t.Budget)
    set_budget = _Op(calls.set_budget, t.Budget)
    get_input = _Op(calls.get_input, bytes)
    healthz = _Op(calls.healthz, t.Status)
    readyz = _Op(calls.readyz, t.Status)
    metrics = _Op(calls.metrics, bytes)
    openapi = _Op(calls.openapi, _document)
    create_subscription = _Op(calls.create_subscription, t.Subscription)
    list_subscriptions = _Op(calls.list_subscriptions, t.SubscriptionList)
    get_subscription = _Op(calls.get_subscription, t.Subscription)
    update_subscription = _Op(calls.update_subscription, t.Subscription)
    delete_subscription = _Op(calls.delete_subscription, type(None))
    replay_subscription = _Op(calls.replay_subscription, t.Replayed)
    rotate_subscription_secret = _Op(calls.rotate_subscription_secret, t.Subscription)
    send_test_event = _Op(calls.send_test_event, t.TestEventSent)
    callback_keys = _Op(calls.callback_keys, t.CallbackKeys)
    list_events = _Op(calls.list_events, t.EventPage)
    event_deliveries = _Op(calls.event_deliveries, t.EventDeliveries)
    replay_event = _Op(calls.replay_event, t.Replayed)
    dead_deliveries = _Op(calls.dead_deliveries, t.DeliveryList)


class AsyncClient:
    """`async with AsyncClient(url, api_key) as sf: await sf.create_batch(items=[...])`"""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = http or httpx.AsyncClient(base_url=self.base_url, headers=_headers(api_key), timeout=timeout_s)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call) -> Any:
        method, path, kwargs = call.request()
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except _TRANSPORT_ERRORS as exc:
                error = exc
            wait = self.retry.wait(attempt, call, response, error)
            if wait is None:
                if error is not None:
                    raise connection_failed(self.base_url, error) from error
                assert response is not None
                return result(call, response)
            await asyncio.sleep(wait)
            attempt += 1

    async def all_batch_jobs(self, batch_id: str, *, state: str | None = None) -> list[t.JobSummary]:
        """Every job of the batch (all pages)."""
        return [job async for job in self.iter_batch_jobs(batch_id, state=state)]

    async def iter_batch_jobs(self, batch_id: str, *, state: str | None = None) -> AsyncIterator[t.JobSummary]:
        cursor: str | None = None
        while True:
            page = await self.list_batch_jobs(batch_id, state=state, limit=500, cursor=cursor)
            for job in page["jobs"]:
                yield job
            cursor = page["next_cursor"]
            if not cursor:
                return

    async def iter_events(self, *, type: str | None = None, since: str | None = None) -> AsyncIterator[t.Event]:
        """Every event, newest first (all pages)."""
        cursor: str | None = None
        while True:
            page = await self.list_events(type=type, since=since, limit=500, cursor=cursor)
            for event in page["events"]:
                yield event
            cursor = page["next_cursor"]
            if not cursor:
                return

    create_batch = _AsyncOp(calls.create_batch, t.BatchCreated)
    list_batches = _AsyncOp(calls.list_batches, t.BatchPage)
    get_batch = _AsyncOp(calls.get_batch, t.BatchSummary)
    list_batch_jobs = _AsyncOp(calls.list_batch_jobs, t.JobPage)
    get_job = _AsyncOp(calls.get_job, t.Job)
    get_job_mask = _AsyncOp(calls.get_job_mask, bytes)
    get_batch_manifest = _AsyncOp(calls.get_batch_manifest, bytes)
    get_signed_mask = _AsyncOp(calls.get_signed_mask, bytes)
    get_job_events = _AsyncOp(calls.get_job_events, t.Timeline)
    cancel_job = _AsyncOp(calls.cancel_job, t.Job)
    retry_job = _AsyncOp(calls.retry_job, t.Job)
    upload_input = _AsyncOp(calls.upload_input, t.Input)
    estimate_batch = _AsyncOp(calls.estimate_batch, t.Estimate)
    get_budget = _AsyncOp(calls.get_budget, t.Budget)
    set_budget = _AsyncOp(calls.set_budget, t.Budget)
    get_input = _AsyncOp(calls.get_input, bytes)
    healthz = _AsyncOp(calls.healthz, t.Status)
    readyz = _AsyncOp(calls.readyz, t.Status)
    metrics = _AsyncOp(calls.metrics, bytes)
    openapi = _AsyncOp(calls.openapi, _document)
    create_subscription = _AsyncOp(calls.create_subscription, t.Subscription)
    list_subscriptions = _AsyncOp(calls.list_subscriptions, t.SubscriptionList)
    get_subscription = _AsyncOp(calls.get_subscription, t.Subscription)
    update_subscription = _AsyncOp(calls.update_subscription, t.Subscription)
    delete_subscription = _AsyncOp(calls.delete_subscription, type(None))
    replay_subscription = _AsyncOp(calls.replay_subscription, t.Replayed)
    rotate_subscription_secret = _AsyncOp(calls.rotate_subscription_secret, t.Subscription)
    send_test_event = _AsyncOp(calls.send_test_event, t.TestEventSent)
    callback_keys = _AsyncOp(calls.callback_keys, t.CallbackKeys)
    list_events = _AsyncOp(calls.list_events, t.EventPage)
    event_deliveries = _AsyncOp(calls.event_deliveries, t.EventDeliveries)
    replay_event = _AsyncOp(calls.replay_event, t.Replayed)
    dead_deliveries = _AsyncOp(calls.dead_deliveries, t.DeliveryList)
