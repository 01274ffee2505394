"""The OpenAPI 3.1 document: the routes written by hand (service/api/openapi.json), the event
catalogue (`webhooks`) generated from the payload types (service/api/catalogue.py)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.api.endpoint import RequestHandler

DOCUMENT = "openapi.json"


def load_document() -> bytes:
    """The document's bytes, checked to be JSON so a broken edit fails at start-up, not in a client."""
    from service.api.catalogue import catalogue

    doc = orjson.loads(resources.files("service.api").joinpath(DOCUMENT).read_bytes())
    webhooks, schemas = catalogue()
    clash = set(schemas) & set(doc["components"]["schemas"])
    if clash:
        raise ValueError(f"event payload schemas clash with the document's: {sorted(clash)}")
    doc["webhooks"] = webhooks
    doc["components"]["schemas"] |= schemas
    return orjson.dumps(doc)


def document() -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(load_document())
    return parsed


def openapi_route(raw: bytes) -> RequestHandler:
    async def serve(_request: Request) -> Response:
        return Response(raw, media_type="application/json")

    return serve
