"""The event catalogue: the OpenAPI document's `webhooks` section (OpenAPI 3.1), one entry per
event type, built from the msgspec types that encode every delivered payload
(service/callback_events.py), each with its example, so the catalogue cannot drift."""

from __future__ import annotations

from typing import Any

import msgspec

from service.callback_events import DATA_TYPES, EVENT_TYPES, example_payload

_REF = "#/components/schemas/{name}"
_SIGNATURE_HEADERS = [
    {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "the event id: the same on every retry and replay; deduplicate on it"},
    {"name": "webhook-timestamp", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "unix seconds when this attempt was signed; refuse ones far from now"},
    {"name": "webhook-signature", "in": "header", "required": True, "schema": {"type": "string"},
     "description": "space-separated `v1,<base64 HMAC-SHA256>` (and `v1a,<base64 Ed25519>`) over "
     "`{webhook-id}.{webhook-timestamp}.{body}`; verify with service.client.verify_callback"},
]  # fmt: skip


def envelope_name(kind: str) -> str:
    """`job.succeeded` -> `JobSucceededEvent`: the component schema of that type's whole body."""
    return "".join(part.capitalize() for part in kind.split(".")) + "Event"


def catalogue() -> tuple[dict[str, Any], dict[str, Any]]:
    """(webhooks section, component schemas it refers to)."""
    data_types = list(dict.fromkeys(DATA_TYPES.values()))
    _, schemas = msgspec.json.schema_components(data_types, ref_template=_REF)
    webhooks: dict[str, Any] = {}
    for kind in EVENT_TYPES:
        name = envelope_name(kind)
        example = example_payload(kind)
        schemas[name] = {
            "type": "object",
            "description": f"The body of every `{kind}` delivery.",
            "required": ["id", "type", "timestamp", "data"],
            "properties": {
                "id": {"type": "string", "description": "the event id, also sent as `webhook-id`"},
                "type": {"const": kind},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"$ref": _REF.format(name=DATA_TYPES[kind].__name__)},
            },
            "examples": [example],
        }
        webhooks[kind] = {
            "post": {
                "operationId": "on_" + kind.replace(".", "_"),
                "summary": f"`{kind}`, signed (Standard Webhooks), to subscriptions and batch callback URLs",
                "tags": ["events"],
                "security": [],
                "parameters": _SIGNATURE_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": _REF.format(name=name)}, "example": example}},
                },
                "responses": {
                    "2XX": {"description": "received; any 2xx counts as delivered"},
                    "410": {"description": "gone: segflow disables the subscription"},
                    "429": {"description": "slow down: Retry-After (seconds or a date) is honoured, bounded"},
                    "503": {"description": "unavailable: Retry-After is honoured, bounded"},
                    "default": {"description": "anything else (or no answer within the timeout) is retried"},
                },
            }
        }
    return webhooks, schemas
