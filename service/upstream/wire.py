"""Upstream wire types, decoded in one place: API envelopes, task objects, webhook bodies, task
history pages and account info.

Typed structs (msgspec) do the strict part in C: a wrong type is a WireError naming the field's path.
The tolerant part is written down here once: status casing and spellings (unknown: not final),
`code` 0 or 200, the zero time, every output key (`image_url`, `image_urls`, `temporary_image_urls`,
inline `image_base64s`), `logs` null or holding objects, `meta.usage` missing or odd, `config` of any
shape (only the webhook endpoint is read from it).
"""

from __future__ import annotations

import copy
import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import orjson

MODEL = "qubico/image-toolkit"
TASK_TYPE = "segment"
REDACTED = "[redacted]"
INLINE_PREFIX = "data:image/png;base64,"
"""An inline (base64) mask travels through segflow as a data: URL in the job's output list, so the
one fetch path stores it like a downloaded one (bounded and checked the same way)."""
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
    CANCELLED = "cancelled"
    OTHER = "other"  # anything else: not final, polled like processing

    @classmethod
    def parse(cls, raw: str) -> TaskStatus:
        return _STATUS.get(raw.strip().lower(), cls.OTHER)

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
_STATUS = {
    **{s.value: s for s in TaskStatus if s is not TaskStatus.OTHER},
    # The create answer's documented example has status "": the task was just accepted.
    "": TaskStatus.PENDING,
    "success": TaskStatus.COMPLETED,
    "canceled": TaskStatus.CANCELLED,
    "running": TaskStatus.PROCESSING,
    "in_progress": TaskStatus.PROCESSING,
}


class FailureKind(enum.StrEnum):
    """What a failed task's texts say about trying again."""

    RETRYABLE = "retryable"  # the provider's rate limit: send again later, not a real failure
    INPUT = "invalid_image"  # the input cannot be used: sending it again cannot help
    OTHER = "other"  # a failure of the task itself: final, the client may retry


# One table, read top to bottom: the first phrase found in the error message, raw message or logs
# (lower-cased) decides. Retryable first: a rate-limited task says nothing about its image.
FAILURE_TEXTS: tuple[tuple[str, FailureKind], ...] = (
    ("too many requests", FailureKind.RETRYABLE),
    ("rate limit", FailureKind.RETRYABLE),
    ("concurrency limit", FailureKind.RETRYABLE),
    ("invalid image", FailureKind.INPUT),
    ("input.image", FailureKind.INPUT),
    ("image format", FailureKind.INPUT),
    ("unsupported image", FailureKind.INPUT),
    ("not a readable", FailureKind.INPUT),
    ("cannot identify image", FailureKind.INPUT),
    ("each side must be at most", FailureKind.INPUT),
    ("image too large", FailureKind.INPUT),
    ("image is too large", FailureKind.INPUT),
    ("failed to download image", FailureKind.INPUT),
    ("could not fetch", FailureKind.INPUT),
)


def classify_failure(texts: tuple[str, ...]) -> FailureKind:
    lowered = [t.lower() for t in texts if t]
    for phrase, kind in FAILURE_TEXTS:
        if any(phrase in t for t in lowered):
            return kind
    return FailureKind.OTHER


class TaskError(msgspec.Struct, frozen=True, gc=False):
    code: int
    message: str
    raw_message: str


class TaskSnapshot(msgspec.Struct, frozen=True, gc=False):
    """What the upstream says about one task at one moment."""

    task_id: str
    model: str
    task_type: str
    status: TaskStatus
    raw_status: str
    output_urls: tuple[str, ...]  # every mask: URLs first, then inline ones as data: URLs
    error: TaskError | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    usage_consume: int | None
    logs: tuple[str, ...]
    webhook_endpoint: str | None

    @property
    def failure_kind(self) -> FailureKind | None:
        """For a failed task, what its texts say (FAILURE_TEXTS); None for any other status."""
        if self.status is not TaskStatus.FAILED:
            return None
        texts = self.logs if self.error is None else (self.error.message, self.error.raw_message, *self.logs)
        return classify_failure(texts)

    @property
    def failure_is_retryable(self) -> bool:
        """A failure caused by the upstream's rate limit ("too many requests"): try again later."""
        return self.failure_kind is FailureKind.RETRYABLE

    @property
    def is_segment(self) -> bool:
        return self.model.lower() == MODEL and self.task_type.lower() == TASK_TYPE


class WebhookDelivery(msgspec.Struct, frozen=True, gc=False):
    timestamp: int
    task: TaskSnapshot


class HistoryPage(msgspec.Struct, frozen=True, gc=False):
    """One page of `GET /api/open/tasks/histories`: rows as far as the provider documents them."""

    page: int
    page_size: int
    total: int | None
    tasks: tuple[HistoryRow, ...]


class HistoryRow(msgspec.Struct, frozen=True, gc=False):
    task_id: str
    status: TaskStatus
    raw_status: str
    model: str
    task_type: str
    service_mode: str
    created_at: datetime | None
    ended_at: datetime | None
    usage_consume: int | None


class AccountInfo(msgspec.Struct, frozen=True, gc=False):
    account_name: str
    account_id: str
    credits: float | None
    equivalent_in_usd: float | None  # "the actually valid balance value in US dollar"


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


# the wire structs: shapes only; every member the contract leaves open is optional ------------


class _Error(msgspec.Struct):
    code: int = 0
    message: str | None = None
    raw_message: str | None = None


class _Output(msgspec.Struct):
    image_url: str | None = None
    image_urls: list[str] | None = None
    temporary_image_urls: list[str] | None = None
    image_base64s: list[str] | None = None


class _Meta(msgspec.Struct):
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    usage: Any = None  # unit and shape undocumented: read if it is an object with an integer consume


class _Task(msgspec.Struct):
    task_id: str
    model: str | None = None
    task_type: str | None = None
    status: str | None = None
    config: Any = None  # echoes the secret; only webhook_config.endpoint is read
    output: _Output | None = None
    meta: _Meta | None = None
    error: _Error | None = None
    logs: list[Any] | None = None


class _Webhook(msgspec.Struct):
    timestamp: int
    data: _Task


class _Envelope(msgspec.Struct):
    data: _Task | None = None


class _HistoryTask(msgspec.Struct):
    task_id: str
    status: str | None = None
    model: str | None = None
    task_type: str | None = None
    service_mode: str | None = None
    created_at: str | int | None = None
    ended_at: str | int | None = None
    usage: Any = None
    meta: _Meta | None = None


class _HistoryData(msgspec.Struct):
    tasks: list[_HistoryTask] | None = None
    rows: list[_HistoryTask] | None = msgspec.field(default=None, name="list")  # another name clients meet
    page: int | None = None
    page_size: int | None = None
    total: int | None = None


class _HistoryEnvelope(msgspec.Struct):
    data: _HistoryData | list[_HistoryTask] | None = None


class _Account(msgspec.Struct):
    account_name: str | None = None
    account_id: str | int | None = None
    credits: float | None = None
    equivalent_in_usd: float | None = None


class _AccountEnvelope(msgspec.Struct):
    data: _Account | None = None


# msgspec's own error text, e.g. "Expected `str`, got `int` - at `$.data.task_id`", said our way.
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<type>[^`]*)`(?:, got `[^`]*`)?$")

_S = TypeVar("_S", bound=msgspec.Struct)
_webhook_decoder = msgspec.json.Decoder(_Webhook)


def _path(base: str, rest: str) -> str:
    joined = f"{base}{rest}" if base else rest.removeprefix(".")
    return joined or "$"


def _wire_error(exc: msgspec.ValidationError, base: str = "") -> WireError:
    found = _AT.match(str(exc))
    what, rest = (found["what"], found["path"] or "") if found else (str(exc), "")
    missing = _MISSING.match(what)
    if missing:
        field = missing["field"]
        return WireError(f"{_path(base, f'{rest}.{field}')}: missing")
    expected = _EXPECTED.match(what)
    if expected:
        return WireError(f"{_path(base, rest)}: expected {expected['type'].replace('`', '')}")
    return WireError(f"{_path(base, rest)}: {what[:100]}")


def _convert(obj: object, kind: type[_S], base: str) -> _S:
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise _wire_error(exc, base) from None


def _plain(value: str, path: str) -> str:
    if "\x00" in value:  # no database stores it in text, and no identifier or URL holds one
        raise WireError(f"{path}: contains a NUL character")
    return value


def _text(value: str | None) -> str:
    """Free text (an error message): kept, with any NUL shown as U+FFFD so that it can be stored."""
    return "" if value is None else value.replace("\x00", "\ufffd")


def _time(value: str | int | None, path: str, key: str = "") -> datetime | None:
    """RFC 3339 with offset (or unix seconds, in history rows); the zero time and 0 are "unset"."""
    if isinstance(value, int):
        if value <= 0:
            return None
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise WireError(f"{path}{key}: not a unix time") from None
    if not value or value.startswith(_ZERO_TIME_PREFIX):
        return None
    try:  # Python 3.11 reads RFC 3339 with Z and any number of fraction digits (truncated)
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds: trim nanoseconds, keep the offset
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise WireError(f"{path}{key}: not an RFC 3339 time") from None


def _outputs(out: _Output | None, path: str) -> tuple[str, ...]:
    if out is None:
        return ()
    urls = [out.image_url] if out.image_url else []
    if out.image_urls:
        urls += out.image_urls
    if out.temporary_image_urls:
        urls += out.temporary_image_urls
    if "\x00" in "".join(urls):
        raise WireError(f"{path}: an output URL contains a NUL character")
    if out.image_base64s:
        urls += [_inline(b64, f"{path}.image_base64s[{i}]") for i, b64 in enumerate(out.image_base64s) if b64]
    if len(urls) == 1:
        return (urls[0],)
    return tuple(dict.fromkeys(u for u in urls if u))


_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")


def _inline(b64: str, path: str) -> str:
    """An inline mask as a data: URL; a `data:image/...;base64,` prefix, if sent, is dropped."""
    head, comma, rest = b64.partition(",")
    body = rest if comma and head.startswith("data:") else b64
    if not _BASE64.match(body):
        raise WireError(f"{path}: not base64")
    return INLINE_PREFIX + "".join(body.split())


def _error(err: _Error | None) -> TaskError | None:
    if err is None:
        return None
    message, raw = _text(err.message), _text(err.raw_message)
    if err.code == 0 and not message and not raw:
        return None
    return TaskError(err.code, message, raw)


def _logs(value: list[Any] | None, path: str) -> tuple[str, ...]:
    if not value:
        return ()
    if all(type(v) is str for v in value):  # the usual case: no per-line work but the NUL check
        return tuple(v.replace("\x00", "\ufffd") for v in value)
    return tuple(_log_line(v, f"{path}[{i}]") for i, v in enumerate(value))


def _log_line(value: Any, path: str) -> str:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255), though it reads 1024
        raise WireError(f"{path}: nested too deeply") from None


def _consume(usage: Any) -> int | None:
    if isinstance(usage, dict):
        raw = usage.get("consume")
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    return None


def _endpoint(config: Any) -> str | None:
    if isinstance(config, dict):
        hook = config.get("webhook_config")
        if isinstance(hook, dict) and isinstance(hook.get("endpoint"), str) and hook["endpoint"]:
            return str(hook["endpoint"])
    return None


def _snapshot(task: _Task, path: str) -> TaskSnapshot:
    task_id, raw_status = task.task_id, task.status or ""
    model, task_type = task.model or "", task.task_type or ""
    if "\x00" in task_id + raw_status + model + task_type:  # paths are built only on this rare error
        for key, value in (("task_id", task_id), ("status", raw_status), ("model", model), ("task_type", task_type)):
            _plain(value, f"{path}.{key}")
    if not task_id:
        raise WireError(f"{path}.task_id: empty")
    meta = task.meta or _NO_META
    return TaskSnapshot(
        task_id=task_id,
        model=model,
        task_type=task_type,
        status=_STATUS.get(raw_status.strip().lower(), TaskStatus.OTHER),
        raw_status=raw_status,
        output_urls=_outputs(task.output, f"{path}.output") if task.output is not None else (),
        error=_error(task.error),
        created_at=_time(meta.created_at, path, ".meta.created_at") if meta.created_at else None,
        started_at=_time(meta.started_at, path, ".meta.started_at") if meta.started_at else None,
        ended_at=_time(meta.ended_at, path, ".meta.ended_at") if meta.ended_at else None,
        usage_consume=_consume(meta.usage),
        logs=_logs(task.logs, f"{path}.logs") if task.logs else (),
        webhook_endpoint=_endpoint(task.config),
    )


_NO_META = _Meta()


# decoding entry points -------------------------------------------------------------------------


def decode_task(obj: object, path: str = "data") -> TaskSnapshot:
    """The task object of an API answer or a webhook (already parsed)."""
    return _snapshot(_convert(obj, _Task, path), path)


def decode_envelope(obj: object) -> TaskSnapshot:
    """An API answer `{"code", "data": <task>, "message"}`: success is the presence of data.task_id."""
    envelope = _convert(obj, _Envelope, "")
    if envelope.data is None:
        raise WireError("data: missing")
    return _snapshot(envelope.data, "data")


def decode_envelope_bytes(body: bytes) -> TaskSnapshot:
    """`decode_envelope` straight from the answer's bytes (one pass, no intermediate dicts)."""
    envelope = _decode_bytes(body, _Envelope)
    if envelope.data is None:
        raise WireError("data: missing")
    return _snapshot(envelope.data, "data")


def decode_webhook(body: bytes) -> WebhookDelivery:
    """A webhook body `{"timestamp": <unix s>, "data": <task>}`."""
    delivery = _decode_bytes(body, _Webhook, _webhook_decoder)
    return WebhookDelivery(delivery.timestamp, _snapshot(delivery.data, "data"))


def decode_history(body: bytes) -> HistoryPage:
    """A page of task history. The rows' container is `data.tasks`, `data.list` or `data` itself
    (the page shape is undocumented); each row must at least name its task."""
    envelope = _decode_bytes(body, _HistoryEnvelope)
    data = envelope.data
    if data is None:
        raise WireError("data: missing")
    if isinstance(data, list):
        rows, page, size, total = data, 0, 0, None
    else:
        rows = data.tasks if data.tasks is not None else (data.rows or [])
        page, size, total = data.page or 0, data.page_size or 0, data.total
    return HistoryPage(page, size, total, tuple(_history_row(r, f"data.tasks[{i}]") for i, r in enumerate(rows)))


def _history_row(row: _HistoryTask, path: str) -> HistoryRow:
    task_id = _plain(row.task_id, f"{path}.task_id")
    if not task_id:
        raise WireError(f"{path}.task_id: empty")
    raw_status = _plain(row.status or "", f"{path}.status")
    meta = row.meta or _NO_META
    return HistoryRow(
        task_id=task_id,
        status=TaskStatus.parse(raw_status),
        raw_status=raw_status,
        model=_plain(row.model or "", f"{path}.model"),
        task_type=_plain(row.task_type or "", f"{path}.task_type"),
        service_mode=_plain(row.service_mode or "", f"{path}.service_mode"),
        created_at=_time(row.created_at if row.created_at is not None else meta.created_at, f"{path}.created_at"),
        ended_at=_time(row.ended_at if row.ended_at is not None else meta.ended_at, f"{path}.ended_at"),
        usage_consume=_consume(row.usage if row.usage is not None else meta.usage),
    )


def decode_account(body: bytes) -> AccountInfo:
    """`GET /account/info`: the usable balance is `equivalent_in_usd`."""
    envelope = _decode_bytes(body, _AccountEnvelope)
    if envelope.data is None:
        raise WireError("data: missing")
    acc = envelope.data
    return AccountInfo(
        account_name=_plain(acc.account_name or "", "data.account_name"),
        account_id=_plain(str(acc.account_id or ""), "data.account_id"),
        credits=acc.credits,
        equivalent_in_usd=acc.equivalent_in_usd,
    )


def _decode_bytes(body: bytes, kind: type[_S], decoder: msgspec.json.Decoder[_S] | None = None) -> _S:
    try:
        if decoder is not None:
            return decoder.decode(body)
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise _wire_error(exc) from None
    except msgspec.DecodeError:
        raise WireError("$: not JSON") from None
    except RecursionError:  # nested deeper than the decoder goes, inside a member read as Any
        raise WireError("$: nested too deeply") from None


def envelope_error(body: bytes) -> tuple[int, str] | None:
    """The envelope's own error, when an answer carries one and no data: `(code, message)`.

    Public clients treat an envelope `code` other than 200 (or 0, in the generic schema) as a
    failure even under HTTP 200; None when the answer has data or a success code.
    """
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict) or decoded.get("data") is not None:
        return None
    code = decoded.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or code in (0, 200):
        return None
    message = decoded.get("message")
    return code, (message[:500] if isinstance(message, str) else "")


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
