"""Upstream wire types, decoded in one place: API envelopes, task objects and webhook bodies.

Strict about shape (a wrong type is a WireError naming the field), tolerant of every documented
variant: status casing, unknown statuses (not final), `code` 0 or 200, the zero time,
`output.image_url` and/or `output.image_urls`, `logs` null, `meta.usage` missing.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

MODEL = "qubico/image-toolkit"
TASK_TYPE = "segment"
REDACTED = "[redacted]"
_ZERO_TIME_PREFIX = "0001-01-01"


class WireError(ValueError):
    """The upstream sent something that is not what the contract describes (the field path says
    where). Never carries payload values, so never a secret."""


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    STAGED = "staged"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    OTHER = "other"  # anything else ("", "running", "cancelled", …): not final

    @classmethod
    def parse(cls, raw: str) -> TaskStatus:
        value = raw.strip().lower()
        if value == "success":
            return cls.COMPLETED
        return _STATUS.get(value, cls.OTHER)

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


_STATUS = {s.value: s for s in TaskStatus if s is not TaskStatus.OTHER}


@dataclass(frozen=True, slots=True)
class TaskError:
    code: int
    message: str
    raw_message: str


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """What the upstream says about one task at one moment."""

    task_id: str
    model: str
    task_type: str
    status: TaskStatus
    raw_status: str
    output_urls: tuple[str, ...]
    error: TaskError | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    usage_consume: int | None
    logs: tuple[str, ...]
    webhook_endpoint: str | None

    @property
    def failure_is_retryable(self) -> bool:
        """A failure caused by the upstream's rate limit ("too many requests"): try again later."""
        if self.status is not TaskStatus.FAILED:
            return False
        texts = [*self.logs]
        if self.error is not None:
            texts += [self.error.message, self.error.raw_message]
        return any("too many requests" in t.lower() for t in texts)

    @property
    def is_segment(self) -> bool:
        return self.model.lower() == MODEL and self.task_type.lower() == TASK_TYPE


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    timestamp: int
    task: TaskSnapshot


@dataclass(frozen=True, slots=True)
class CreateRequest:
    image: str
    prompt: str
    negative_prompt: str = ""
    segment_factor: int = 0
    webhook_endpoint: str | None = None
    webhook_secret: str | None = None
    service_mode: str = ""

    def to_json(self) -> dict[str, Any]:
        config: dict[str, Any] = {"service_mode": self.service_mode}
        if self.webhook_endpoint:
            config["webhook_config"] = {
                "endpoint": self.webhook_endpoint,
                "secret": self.webhook_secret or "",
            }
        return {
            "model": "Qubico/image-toolkit",
            "task_type": TASK_TYPE,
            "input": {
                "image": self.image,
                "prompt": self.prompt,
                "negative_prompt": self.negative_prompt,
                "segment_factor": self.segment_factor,
            },
            "config": config,
        }

    def __repr__(self) -> str:
        return (
            f"CreateRequest(image={self.image!r}, prompt={self.prompt!r}, "
            f"webhook_endpoint={self.webhook_endpoint!r}, webhook_secret=[redacted])"
        )


# decoding ------------------------------------------------------------------------------------


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{path}: expected an object")
    return value


def _str(obj: dict[str, Any], key: str, path: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise WireError(f"{path}.{key}: {'missing' if key not in obj else 'expected a string'}")
    if "\x00" in value:  # no database stores it in text, and no identifier or URL holds one
        raise WireError(f"{path}.{key}: contains a NUL character")
    return value


def _text(obj: dict[str, Any], key: str, path: str) -> str:
    """Free text (an error message): kept, with any NUL shown as U+FFFD so that it can be stored."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireError(f"{path}.{key}: expected a string")
    return value.replace("\x00", "\ufffd")


def _time(value: Any, path: str) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WireError(f"{path}: expected an RFC 3339 string")
    if value.startswith(_ZERO_TIME_PREFIX):
        return None
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds: trim nanoseconds, keep the offset
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise WireError(f"{path}: not an RFC 3339 time") from None


def _outputs(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    out = _obj(value, path)
    urls: list[str] = []
    single = out.get("image_url")
    if single is not None and single != "":
        if not isinstance(single, str):
            raise WireError(f"{path}.image_url: expected a string")
        urls.append(single)
    many = out.get("image_urls")
    if many is not None:
        if not isinstance(many, list) or not all(isinstance(u, str) for u in many):
            raise WireError(f"{path}.image_urls: expected a list of strings")
        urls.extend(u for u in many if u)
    if any("\x00" in u for u in urls):
        raise WireError(f"{path}: an output URL contains a NUL character")
    return tuple(dict.fromkeys(urls))


def _error(value: Any, path: str) -> TaskError | None:
    if value is None:
        return None
    err = _obj(value, path)
    code = err.get("code", 0)
    if isinstance(code, bool) or not isinstance(code, int):
        raise WireError(f"{path}.code: expected an integer")
    message = _text(err, "message", path)
    raw = _text(err, "raw_message", path)
    if code == 0 and not message and not raw:
        return None
    return TaskError(code, message, raw)


def _logs(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise WireError(f"{path}: expected a list")
    return tuple(_log_line(v, f"{path}[{i}]") for i, v in enumerate(value))


def _log_line(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255), though it reads 1024
        raise WireError(f"{path}: nested too deeply") from None


def _meta(value: Any, path: str) -> tuple[datetime | None, datetime | None, datetime | None, int | None]:
    if value is None:
        return None, None, None, None
    meta = _obj(value, path)
    usage = meta.get("usage")
    consume: int | None = None
    if isinstance(usage, dict):
        raw = usage.get("consume")
        consume = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    return (
        _time(meta.get("created_at"), f"{path}.created_at"),
        _time(meta.get("started_at"), f"{path}.started_at"),
        _time(meta.get("ended_at"), f"{path}.ended_at"),
        consume,
    )


def _endpoint(config: Any) -> str | None:
    if isinstance(config, dict):
        hook = config.get("webhook_config")
        if isinstance(hook, dict) and isinstance(hook.get("endpoint"), str) and hook["endpoint"]:
            return str(hook["endpoint"])
    return None


def decode_task(obj: object, path: str = "data") -> TaskSnapshot:
    """The task object of an API answer or a webhook."""
    task = _obj(obj, path)
    task_id = _str(task, "task_id", path)
    if not task_id:
        raise WireError(f"{path}.task_id: empty")
    raw_status = _str(task, "status", path, default="")
    created, started, ended, consume = _meta(task.get("meta"), f"{path}.meta")
    return TaskSnapshot(
        task_id=task_id,
        model=_str(task, "model", path, default=""),
        task_type=_str(task, "task_type", path, default=""),
        status=TaskStatus.parse(raw_status),
        raw_status=raw_status,
        output_urls=_outputs(task.get("output"), f"{path}.output"),
        error=_error(task.get("error"), f"{path}.error"),
        created_at=created,
        started_at=started,
        ended_at=ended,
        usage_consume=consume,
        logs=_logs(task.get("logs"), f"{path}.logs"),
        webhook_endpoint=_endpoint(task.get("config")),
    )


def decode_envelope(obj: object) -> TaskSnapshot:
    """An API answer `{"code", "data": <task>, "message"}`: success is the presence of data.task_id."""
    envelope = _obj(obj, "$")
    data = envelope.get("data")
    if data is None:
        raise WireError("data: missing")
    return decode_task(data)


def decode_webhook(body: bytes) -> WebhookDelivery:
    """A webhook body `{"timestamp": <unix s>, "data": <task>}`."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WireError("$: not JSON") from None
    envelope = _obj(obj, "$")
    timestamp = envelope.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise WireError("timestamp: expected an integer")
    if "data" not in envelope:
        raise WireError("data: missing")
    return WebhookDelivery(timestamp, decode_task(envelope["data"]))


def redact_secrets(obj: Any) -> Any:
    """A copy of an upstream payload (webhook body, envelope or bare task) with the webhook secret
    replaced by "[redacted]"; the input is not changed."""
    out = copy.deepcopy(obj)
    if not isinstance(out, dict):
        return out
    for task in (out, out.get("data")):
        if isinstance(task, dict):
            config = task.get("config")
            hook = config.get("webhook_config") if isinstance(config, dict) else None
            if isinstance(hook, dict) and "secret" in hook:
                hook["secret"] = REDACTED
    return out
