"""A sandbox task: its state, and its JSON exactly as the real service shows it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.sandbox.images import InputImage
from service.sandbox.wire import MODEL, TASK_TYPE, CreateRequest

ZERO_TIME = "0001-01-01T00:00:00Z"
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "canceled"})
CANCELLED_SPELLINGS = ("cancelled", "canceled")  # the provider's pages use both
# Usage is reported in an undocumented unit; the example's 100000 for a $0.01 task suggests 1e-7 USD.
CONSUME_PER_USD = 10_000_000


@dataclass(frozen=True)
class TaskError:
    code: int
    message: str
    logs: tuple[str, ...]


RATE_LIMITED = TaskError(10000, "too many requests", ("too many requests, please retry later",))
MODEL_FAILED = TaskError(10000, "segmentation failed: the model returned no mask", ("segmentation failed",))
CANCELLED = TaskError(10000, "task cancelled by user", ("task cancelled",))
NO_IMAGE = InputImage(sha256="", width=0, height=0, format="none")
"""The input of a task whose image could not be used: nothing to size, nothing billed."""


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None) -> str:
    """RFC 3339 with offset; an unset time is the zero time, as the real service writes it."""
    return ZERO_TIME if moment is None else moment.isoformat(timespec="microseconds")


@dataclass
class SandboxTask:
    task_id: str
    key: str  # the stable decision key (request fingerprint and ordinal), see engine.decision_key
    owner: str  # the API key that created it; other keys get 404, as another account would
    request: CreateRequest
    image: InputImage
    price_usd: float
    created_at: datetime = field(default_factory=now)
    created_mono: float = 0.0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    status: str = "pending"
    output_urls: list[str] = field(default_factory=list)
    output_base64s: list[str] = field(default_factory=list)
    output_key: str = "image_urls"  # image_urls | temporary_image_urls | image_base64s
    error: TaskError | None = None
    bad_image: str | None = None  # why the image cannot be used (bad_image="fail": the task fails)
    holds_slot: bool = False  # counted against the account's concurrency limit
    consume: int = 0
    mask_sha256s: list[str] = field(default_factory=list)
    create_response: str = "sent"  # "sent", "lost" or "held": what its create answer suffered
    faults: list[str] = field(default_factory=list)
    webhook_attempts: int = 0
    webhooks_delivered: int = 0
    # (status, epoch seconds) of every webhook the receiver answered with a 2xx: an acknowledged
    # completion must already be durable on segflow's side (the chaos checker holds it to that).
    webhooks_acked: list[tuple[str, float]] = field(default_factory=list)
    get_count: int = 0
    runner: asyncio.Task[None] | None = None
    # Set once the terminal webhook is settled, so a reordered `processing` one can follow it.
    terminal_webhook_done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def output_url(self) -> str | None:
        return self.output_urls[0] if self.output_urls else None

    @property
    def mask_sha256(self) -> str | None:
        return self.mask_sha256s[0] if self.mask_sha256s else None

    def output_json(self) -> dict[str, Any] | None:
        """`output` as the provider shows it, under the key this task's variant uses."""
        if self.output_key == "image_base64s" and self.output_base64s:
            return {"image_url": None, "image_urls": None, "image_base64s": list(self.output_base64s)}
        if not self.output_urls:
            return None
        if self.output_key == "temporary_image_urls":
            return {"image_url": None, "image_urls": None, "temporary_image_urls": list(self.output_urls)}
        return {"image_url": self.output_urls[0], "image_urls": list(self.output_urls)}

    def to_json(self) -> dict[str, Any]:
        """The task object of GET and webhooks."""
        output = self.output_json()
        error = self.error
        return {
            "task_id": self.task_id,
            "model": MODEL,
            "task_type": TASK_TYPE,
            "status": self.status,
            "config": self.request.config_echo(),
            "input": self.request.input_echo(),
            "output": output,
            "meta": {
                "created_at": rfc3339(self.created_at),
                "started_at": rfc3339(self.started_at),
                "ended_at": rfc3339(self.ended_at),
                "usage": {"type": "llm", "frozen": 0, "consume": self.consume},
                "is_using_private_pool": False,
            },
            "detail": None,
            "logs": list(error.logs) if error else [],
            "error": {
                "code": error.code if error else 0,
                "raw_message": error.message if error else "",
                "message": error.message if error else "",
                "detail": None,
            },
        }

    def history_row(self) -> dict[str, Any]:
        """A row of the task history, as far as the provider documents one."""
        return {
            "task_id": self.task_id,
            "model": MODEL,
            "task_type": TASK_TYPE,
            "status": self.status,
            "service_mode": self.request.service_mode,
            "created_at": int(self.created_at.timestamp()),
            "ended_at": int(self.ended_at.timestamp()) if self.ended_at else 0,
            "usage": {"type": "llm", "frozen": 0, "consume": self.consume},
            "detail": None,
        }

    def summary(self) -> dict[str, Any]:
        """One row of GET /_sandbox/tasks: what tests compare against (never the secret)."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "webhook_endpoint": self.request.webhook_endpoint,
            "image": self.request.image,
            "prompt": self.request.prompt,
            "negative_prompt": self.request.negative_prompt,
            "segment_factor": self.request.segment_factor,
            "created_at": rfc3339(self.created_at),
            "ended_at": rfc3339(self.ended_at),
            "width": self.image.width,
            "height": self.image.height,
            "pixels": self.image.pixels,
            "price_usd": self.price_usd,
            "output_url": self.output_url,
            "mask_sha256": self.mask_sha256,
            "mask_sha256s": list(self.mask_sha256s),
            "output_key": self.output_key,
            "error_message": self.error.message if self.error else "",
            "create_response": self.create_response,
            "webhook_attempts": self.webhook_attempts,
            "webhooks_delivered": self.webhooks_delivered,
            "webhooks_acked": [{"status": status, "at": at} for status, at in self.webhooks_acked],
            "faults": list(self.faults),
        }
