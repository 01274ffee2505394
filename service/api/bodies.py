"""Request bodies: read within limits, decoded strictly into declared types, every problem reported.

A batch is either `{"items": [...]}` or `{"images": [...], "prompts": [...]}` (every image with every
prompt). Nothing is stored unless the whole request is valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from service.api.errors import ApiError, Problem, invalid
from service.api.fields import Fields
from service.http_body import BodyTooLarge, read_limited
from service.jobs import JobInput
from service.settings import Settings

MAX_IDEMPOTENCY_KEY = 200

_ITEM_FIELDS = frozenset({"image", "prompt", "negative_prompt", "segment_factor", "metadata"})
_ITEMS_SHAPE = frozenset({"items", "callback_url"})
_CROSS_SHAPE = frozenset({"images", "prompts", "negative_prompt", "segment_factor", "callback_url"})


@dataclass(frozen=True, slots=True)
class BatchRequest:
    items: tuple[JobInput, ...]
    callback_url: str | None
    request_hash: str  # sha256 of the canonical JSON body: what an Idempotency-Key replay must match


async def read_json(request: Request, limit: int, *, allow_empty: bool = False) -> Any:
    """The decoded JSON body; 413 past `limit` bytes (checked before reading all), 400 if malformed.
    With `allow_empty`, no body at all is None (for POSTs whose body is optional)."""
    try:
        body = await read_limited(request, limit)
    except BodyTooLarge:
        raise ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes") from None
    if allow_empty and not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header, if given; 422 when it is empty or too long."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        reason = f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        raise invalid([Problem("headers.Idempotency-Key", reason)])
    return key


def decode_batch(doc: Any, settings: Settings) -> BatchRequest:
    """A valid batch from the decoded body, or 422 naming every problem."""
    f = Fields(settings)
    if not isinstance(doc, dict):
        f.problem("", "the body must be a JSON object")
        raise invalid(f.problems)
    if "items" in doc and ("images" in doc or "prompts" in doc):
        f.problem("", "give either items, or images with prompts, not both")
        raise invalid(f.problems)
    cross = "items" not in doc and ("images" in doc or "prompts" in doc)
    f.unknown(doc, _CROSS_SHAPE if cross else _ITEMS_SHAPE, "")
    items = _cross_items(doc, f) if cross else _listed_items(doc, f)
    callback = f.callback_url(doc.get("callback_url"), "callback_url")
    if f.problems:
        raise invalid(f.problems)
    canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    return BatchRequest(tuple(items), callback, hashlib.sha256(canonical).hexdigest())


def _listed_items(doc: Mapping[str, Any], f: Fields) -> list[JobInput]:
    raw = f.array(doc.get("items"), "items", required=True)
    if raw is None or not f.count(len(raw), "items"):
        return []
    items: list[JobInput] = []
    for i, entry in enumerate(raw):
        path = f"items[{i}]"
        if not isinstance(entry, dict):
            f.problem(path, "must be an object")
            continue
        f.unknown(entry, _ITEM_FIELDS, path)
        image = f.image(entry.get("image"), f"{path}.image")
        prompt = f.text(entry.get("prompt"), f"{path}.prompt", required=True)
        negative = f.text(entry.get("negative_prompt"), f"{path}.negative_prompt", required=False)
        factor = f.segment_factor(entry.get("segment_factor"), f"{path}.segment_factor")
        metadata = f.metadata(entry.get("metadata"), f"{path}.metadata")
        if image is not None and prompt is not None:
            items.append(JobInput(image, prompt, negative or "", factor or 0, metadata))
    return items


def _cross_items(doc: Mapping[str, Any], f: Fields) -> list[JobInput]:
    raw_images = f.array(doc.get("images"), "images", required=True)
    raw_prompts = f.array(doc.get("prompts"), "prompts", required=True)
    negative = f.text(doc.get("negative_prompt"), "negative_prompt", required=False)
    factor = f.segment_factor(doc.get("segment_factor"), "segment_factor")
    if raw_images is None or raw_prompts is None:
        return []
    if not raw_images:
        f.problem("images", "must hold at least 1 image")
    if not raw_prompts:
        f.problem("prompts", "must hold at least 1 prompt")
    if not raw_images or not raw_prompts or not f.count(len(raw_images) * len(raw_prompts), "prompts"):
        return []
    images = [f.image(v, f"images[{i}]") for i, v in enumerate(raw_images)]
    prompts = [f.text(v, f"prompts[{i}]", required=True) for i, v in enumerate(raw_prompts)]
    return [
        JobInput(image, prompt, negative or "", factor or 0)
        for image in images
        for prompt in prompts
        if image is not None and prompt is not None
    ]
