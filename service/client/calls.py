"""One builder per API operation (named after its operation id): the single description of each
call that the sync and async clients both send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.client.core import Call, new_idempotency_key


def create_batch(
    items: Sequence[Mapping[str, Any]] | None = None,
    *,
    images: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    negative_prompt: str | None = None,
    segment_factor: int | None = None,
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    max_spend_usd: float | None = None,
    on_budget: str | None = None,
) -> Call:
    """`items` (each image with its prompt), or every one of `images` with every one of `prompts`. Always sent with an
    Idempotency-Key (a fresh one unless given), kept across retries: a retried POST never pays twice."""
    body: dict[str, Any]
    if items is not None:
        body = {"items": [dict(i) for i in items]}
    else:
        body = {"images": list(images or ()), "prompts": list(prompts or ())}
        if negative_prompt is not None:
            body["negative_prompt"] = negative_prompt
        if segment_factor is not None:
            body["segment_factor"] = segment_factor
    if callback_url is not None:
        body["callback_url"] = callback_url
    if max_spend_usd is not None:
        body["max_spend_usd"] = max_spend_usd
    if on_budget is not None:
        body["on_budget"] = on_budget
    key = idempotency_key or new_idempotency_key()
    return Call("createBatch", json_body=body, headers={"idempotency-key": key})


def list_batches(*, limit: int | None = None, cursor: str | None = None) -> Call:
    return Call("listBatches", params={"limit": limit, "cursor": cursor})


def get_batch(batch_id: str) -> Call:
    return Call("getBatch", {"batch_id": batch_id})


def list_batch_jobs(
    batch_id: str, *, state: str | None = None, limit: int | None = None, cursor: str | None = None
) -> Call:
    return Call("listBatchJobs", {"batch_id": batch_id}, params={"state": state, "limit": limit, "cursor": cursor})


def get_job(job_id: str) -> Call:
    return Call("getJob", {"job_id": job_id})


def get_job_mask(job_id: str) -> Call:
    return Call("getJobMask", {"job_id": job_id}, raw=True)


def get_batch_manifest(batch_id: str) -> Call:
    """The batch's manifest as JSON Lines (one object per job, with signed download links)."""
    return Call("getBatchManifest", {"batch_id": batch_id}, raw=True)


def get_signed_mask(job_id: str, idx: int, *, exp: str, kid: str, sig: str) -> Call:
    """A mask by the parts of its signed link (`artifact.download_url`; no API key needed)."""
    return Call(
        "getSignedMask", {"job_id": job_id, "idx": str(idx)}, params={"exp": exp, "kid": kid, "sig": sig}, raw=True
    )


def get_job_events(job_id: str) -> Call:
    return Call("getJobEvents", {"job_id": job_id})


def cancel_job(job_id: str) -> Call:
    return Call("cancelJob", {"job_id": job_id})


def retry_job(job_id: str) -> Call:
    return Call("retryJob", {"job_id": job_id})


def upload_input(data: bytes, content_type: str) -> Call:
    return Call("uploadInput", content=data, headers={"content-type": content_type})


def estimate_batch(items: Sequence[Mapping[str, Any]], *, max_spend_usd: float | None = None) -> Call:
    """What a batch of `items` would cost and which inputs would be refused; nothing is stored."""
    body: dict[str, Any] = {"items": [dict(i) for i in items]}
    if max_spend_usd is not None:
        body["max_spend_usd"] = max_spend_usd
    return Call("estimateBatch", json_body=body)


def get_budget() -> Call:
    return Call("getBudget")


def set_budget(*, daily_usd: float | None, monthly_usd: float | None) -> Call:
    return Call("setBudget", json_body={"daily_usd": daily_usd, "monthly_usd": monthly_usd})


def get_input(name: str) -> Call:
    return Call("getInput", {"name": name}, raw=True)


def healthz() -> Call:
    return Call("healthz")


def readyz() -> Call:
    return Call("readyz")


def metrics() -> Call:
    return Call("metrics", raw=True)


def openapi() -> Call:
    return Call("openapi")


def create_subscription(url: str, *, event_types: Sequence[str] | None = None, ed25519: bool | None = None) -> Call:
    body: dict[str, Any] = {"url": url}
    if event_types is not None:
        body["event_types"] = list(event_types)
    if ed25519 is not None:
        body["ed25519"] = ed25519
    return Call("createSubscription", json_body=body)


def list_subscriptions() -> Call:
    return Call("listSubscriptions")


def get_subscription(sub_id: str) -> Call:
    return Call("getSubscription", {"sub_id": sub_id})


def update_subscription(
    sub_id: str, *, url: str | None = None, event_types: Sequence[str] | None = None, paused: bool | None = None
) -> Call:
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if event_types is not None:
        body["event_types"] = list(event_types)
    if paused is not None:
        body["paused"] = paused
    return Call("updateSubscription", {"sub_id": sub_id}, json_body=body)


def delete_subscription(sub_id: str) -> Call:
    return Call("deleteSubscription", {"sub_id": sub_id})


def replay_subscription(sub_id: str, *, since: str | float, everything: bool = False) -> Call:
    return Call("replaySubscription", {"sub_id": sub_id}, json_body={"since": since, "all": everything})


def rotate_subscription_secret(sub_id: str, *, overlap_s: float | None = None) -> Call:
    body = {} if overlap_s is None else {"overlap_s": overlap_s}
    return Call("rotateSubscriptionSecret", {"sub_id": sub_id}, json_body=body)


def send_test_event(sub_id: str, event_type: str) -> Call:
    return Call("sendTestEvent", {"sub_id": sub_id}, json_body={"type": event_type})


def callback_keys() -> Call:
    return Call("callbackKeys")


def list_events(
    *, type: str | None = None, limit: int | None = None, cursor: str | None = None, since: str | None = None
) -> Call:
    return Call("listEvents", params={"type": type, "limit": limit, "cursor": cursor, "since": since})


def event_deliveries(event_id: str) -> Call:
    return Call("eventDeliveries", {"event_id": event_id})


def replay_event(event_id: str, *, everything: bool = False) -> Call:
    return Call("replayEvent", {"event_id": event_id}, json_body={"all": everything})


def dead_deliveries() -> Call:
    return Call("deadDeliveries")
