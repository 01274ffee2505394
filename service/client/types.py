"""What the API answers, as TypedDicts (the OpenAPI document's schemas; tests check they agree)."""

from __future__ import annotations

from typing import Any, TypedDict


class JobRef(TypedDict):
    job_id: str
    state: str


class BatchCreated(TypedDict):
    batch_id: str
    jobs: list[JobRef]


class BatchSummary(TypedDict):
    batch_id: str
    created_at: str
    total: int
    counts: dict[str, int]
    done: int
    spend_usd: float
    callback_url: str | None


class BatchPage(TypedDict):
    batches: list[BatchSummary]
    next_cursor: str | None


class JobSummary(TypedDict):
    job_id: str
    state: str
    image: str
    prompt: str
    attempt: int
    error: dict[str, Any] | None
    mask_url: str | None
    price_usd: float | None
    created_at: str
    updated_at: str
    finished_at: str | None


class JobPage(TypedDict):
    jobs: list[JobSummary]
    next_cursor: str | None


class Job(TypedDict):
    job_id: str
    batch_id: str
    state: str
    image: str
    prompt: str
    negative_prompt: str
    segment_factor: int
    metadata: dict[str, Any] | None
    attempt: int
    attempts: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    error: dict[str, Any] | None
    artifact: dict[str, Any] | None
    artifacts: list[dict[str, Any]]
    price_usd: float | None
    created_at: str
    updated_at: str
    finished_at: str | None


class Timeline(TypedDict):
    job_id: str
    timeline: list[dict[str, Any]]


class Input(TypedDict):
    url: str
    content_type: str
    bytes: int


class Subscription(TypedDict):
    id: str
    url: str
    event_types: list[str]
    ed25519: bool
    paused: bool
    created_at: str
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None
    secrets: list[str]
    public_keys: list[str]
    previous_secret_expires_at: str | None


class SubscriptionList(TypedDict):
    subscriptions: list[Subscription]


class Event(TypedDict):
    id: str
    type: str
    batch_id: str | None
    job_id: str | None
    created_at: str
    payload: dict[str, Any]


class EventPage(TypedDict):
    events: list[Event]
    next_cursor: str | None


class Delivery(TypedDict, total=False):
    id: int
    event_id: str
    target: str
    url: str
    state: str
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str
    finished_at: str | None
    attempt_log: list[dict[str, Any]]


class EventDeliveries(TypedDict):
    event: Event
    deliveries: list[Delivery]


class DeliveryList(TypedDict):
    deliveries: list[Delivery]


class Replayed(TypedDict, total=False):
    replayed: int
    event_id: str
    subscription_id: str


class TestEventSent(TypedDict):
    event_id: str
    subscription_id: str
    type: str


class CallbackKeys(TypedDict):
    secrets: list[str]
    public_keys: list[str]


class Status(TypedDict):
    status: str
