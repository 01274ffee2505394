"""Input images uploaded by clients (`segflow submit photo.jpg`): stored under their sha256 and
served at {public_url}/inputs/<sha256>.<ext>, so the upstream can fetch them like any image URL.

The name is the content's hash: unguessable without the image, and the same image uploaded twice
is stored once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from service.api.downloads import stream_object
from service.api.endpoint import Call
from service.api.errors import ApiError
from service.api.responses import json_response
from service.artifacts import ArtifactMissing, content_type_of, input_key, one_chunk
from service.context import Services
from service.http_body import BodyTooLarge, read_limited

MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_SIDE = 3072
_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpg)$")
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg")}


def _inspect(data: bytes) -> tuple[str, str] | str:
    """(extension, content type) of an acceptable image, or the reason it is not."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = _FORMATS.get(img.format or "")
            if kind is None:
                return f"format {img.format} not accepted: JPG or PNG"
            if max(img.size) > MAX_SIDE:
                return f"image is {img.width}x{img.height}; each side must be at most {MAX_SIDE} px"
            img.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "not a readable JPG or PNG image"
    return kind


async def upload_input(call: Call) -> Response:
    """POST /v1/inputs: the image bytes as the body; answers 201 with the URL to submit."""
    request, services = call.request, call.services
    too_large = ApiError(413, "too_large", f"images up to {MAX_INPUT_BYTES} bytes")
    try:
        data = await read_limited(request, MAX_INPUT_BYTES)
    except BodyTooLarge:
        raise too_large from None
    kind = await asyncio.to_thread(_inspect, data)
    if isinstance(kind, str):
        raise ApiError(422, "invalid_image", kind, [{"path": "body", "reason": kind}])
    ext, ctype = kind
    name = f"{hashlib.sha256(data).hexdigest()}.{ext}"
    # A streaming upload would use services.artifacts.stage() while reading the body, then
    # commit() under this name once the image checks out (discard() otherwise).
    await services.artifacts.write(input_key(name), one_chunk(data), max_bytes=MAX_INPUT_BYTES, content_type=ctype)
    url = f"{services.settings.public_url.rstrip('/')}/inputs/{name}"
    return json_response({"url": url, "content_type": ctype, "bytes": len(data)}, 201)


async def serve_input(request: Request) -> Response:
    """GET /inputs/<sha256>.<ext>: public, so the upstream can fetch it; the name is the secret."""
    services: Services = request.app.state.services
    name = request.path_params["name"]
    if not _NAME.match(name):
        raise ApiError(404, "not_found", "no such input")
    try:
        return await stream_object(services.artifacts, input_key(name), media_type=content_type_of(name))
    except ArtifactMissing:  # never uploaded, or deleted by the retention policy
        raise ApiError(404, "not_found", "no such input") from None
