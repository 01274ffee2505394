"""JSON answers, encoded with orjson."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.api.errors import ApiError


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(
    content: Any,
    status: int = 200,
    *,
    headers: Mapping[str, str] | None = None,
    background: BackgroundTask | None = None,
) -> Response:
    return JsonResponse(content, status_code=status, headers=headers, background=background)


def error_response(error: ApiError) -> Response:
    return JsonResponse(error.body(), status_code=error.status, headers=error.headers or None)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in the API's error shape."""
    if not isinstance(exc, HTTPException):
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(ApiError(exc.status_code, code, exc.detail, headers=exc.headers))
