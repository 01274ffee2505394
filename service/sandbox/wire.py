"""The create request as a declared type, decoded and validated in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MODEL = "Qubico/image-toolkit"
TASK_TYPE = "segment"
SERVICE_MODES = ("public", "private", "")


class SandboxError(Exception):
    """An answer other than success: becomes `{"code": status, "data": null, "message": ...}`."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def invalid(message: str) -> SandboxError:
    return SandboxError(400, message)


@dataclass(frozen=True)
class CreateRequest:
    image: str
    prompt: str
    negative_prompt: str
    segment_factor: int
    service_mode: str
    webhook_endpoint: str
    webhook_secret: str

    def input_echo(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "segment_factor": self.segment_factor,
        }

    def config_echo(self) -> dict[str, Any]:
        # The real service echoes the whole config, secret included (see the contract).
        return {
            "service_mode": self.service_mode,
            "webhook_config": {"endpoint": self.webhook_endpoint, "secret": self.webhook_secret},
        }


def parse_create(body: object) -> CreateRequest:
    """Validate a decoded JSON body; raises SandboxError(400) naming the first bad field.

    Unknown fields are ignored, as the real (Go) service does; absent negative_prompt and
    segment_factor take their zero values, present ones must have the right type.
    """
    if not isinstance(body, dict):
        raise invalid("body must be a JSON object")
    if body.get("model") != MODEL:
        raise invalid(f"model must be {MODEL!r}")
    if body.get("task_type") != TASK_TYPE:
        raise invalid(f"task_type must be {TASK_TYPE!r}")
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise invalid("input must be an object")
    image = inp.get("image")
    if not isinstance(image, str) or not is_http_url(image):
        raise invalid("input.image must be an http(s) URL")
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("input.prompt must be a non-empty string")
    negative = inp.get("negative_prompt", "")
    if not isinstance(negative, str):
        raise invalid("input.negative_prompt must be a string")
    factor = inp.get("segment_factor", 0)
    if not isinstance(factor, int) or isinstance(factor, bool):
        raise invalid("input.segment_factor must be an integer")
    mode, endpoint, secret = _parse_config(body.get("config"))
    return CreateRequest(
        image=image,
        prompt=prompt,
        negative_prompt=negative,
        segment_factor=factor,
        service_mode=mode,
        webhook_endpoint=endpoint,
        webhook_secret=secret,
    )


def _parse_config(config: object) -> tuple[str, str, str]:
    if config is None:
        return "", "", ""
    if not isinstance(config, dict):
        raise invalid("config must be an object")
    mode = config.get("service_mode", "")
    if mode not in SERVICE_MODES:
        raise invalid("config.service_mode must be 'public', 'private' or ''")
    hook = config.get("webhook_config")
    if hook is None:
        return mode, "", ""
    if not isinstance(hook, dict):
        raise invalid("config.webhook_config must be an object")
    endpoint = hook.get("endpoint", "")
    secret = hook.get("secret", "")
    if not isinstance(endpoint, str) or (endpoint and not is_http_url(endpoint)):
        raise invalid("config.webhook_config.endpoint must be an http(s) URL")
    if not isinstance(secret, str):
        raise invalid("config.webhook_config.secret must be a string")
    return mode, endpoint, secret


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
