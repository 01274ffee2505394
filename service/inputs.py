"""Input images uploaded by clients (`segflow submit photo.jpg`): stored under their sha256 and
served at {public_url}/inputs/<sha256>.<ext>, so the upstream can fetch them like any image URL.

An upload is streamed to a temporary file within the size limit (never held whole in memory),
then decoded fully and re-encoded, so what is stored and served is only the image: trailing
bytes (an HTML page after the PNG, padding) and metadata are dropped. The name is the stored
content's hash: unguessable without the image, and the same image uploaded twice is stored once.
Inputs are served as inert downloads (`nosniff`, a `sandbox` CSP, a content disposition).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from service.api.downloads import inert_headers, stream_object
from service.api.endpoint import Call
from service.api.errors import ApiError
from service.api.responses import json_response
from service.artifacts import ArtifactMissing, content_type_of, input_key
from service.context import Services
from service.http_body import BodyTooLarge, stream_limited
from service.quotas import charge_upload, upload_allowance

MAX_INPUT_BYTES = 20 * 1024 * 1024
MAX_SIDE = 3072
DECODE_SLOTS = 2
"""Uploads decoded at once per process: a decoded 3072² image is ~38 MB, so this bounds memory."""
_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpg)$")
_FORMATS = {"PNG": ("png", "image/png"), "JPEG": ("jpg", "image/jpeg")}
# Decoding runs on its own few threads: that bounds how many images are decoded at once, and keeps
# the decoders' large buffers in few malloc arenas, so memory is reused rather than spread.
_decoders = ThreadPoolExecutor(max_workers=DECODE_SLOTS, thread_name_prefix="segflow-decode")


async def spool_upload(request: Request, limit: int, folder: Path) -> tuple[Path, int]:
    """Stream the body into a new temporary file in `folder`, within `limit` bytes: (path, size).
    The caller owns the file (and deletes it)."""
    fd, name = await asyncio.to_thread(_new_temporary, folder)
    path, size = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in stream_limited(request, limit):
                size += len(chunk)
                await asyncio.to_thread(fh.write, chunk)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return path, size


def _new_temporary(folder: Path) -> tuple[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=folder, prefix=".upload-")


async def file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    """A local file as a stream, for the artifact backend (local folder or object store)."""
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        while block := await asyncio.to_thread(fh.read, size):
            yield block
    finally:
        fh.close()


def _reencode(raw: Path) -> tuple[Path, str, str] | str:
    """Decode `raw` fully and write the image alone to a sibling temporary file:
    (path, extension, content type), or the reason it is not an acceptable image."""
    try:
        with Image.open(raw) as img:
            kind = _FORMATS.get(img.format or "")
            if kind is None:
                return f"format {img.format} not accepted: JPG or PNG"
            if max(img.size) > MAX_SIDE:  # read from the header, before anything is decoded
                return f"image is {img.width}x{img.height}; each side must be at most {MAX_SIDE} px"
            img.load()  # every pixel: a truncated or corrupt image fails here
            fd, name = tempfile.mkstemp(dir=raw.parent, prefix=".clean-")
            with os.fdopen(fd, "wb") as out:
                if kind[0] == "png":
                    img.save(out, format="PNG")
                else:
                    # "keep" re-uses the upload's own quantisation tables and subsampling, so the
                    # re-encoded JPEG loses (almost) nothing more.
                    img.save(out, format="JPEG", quality="keep", icc_profile=img.info.get("icc_profile"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "not a readable JPG or PNG image"
    return Path(name), *kind


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


async def upload_input(call: Call) -> Response:
    """POST /v1/inputs: the image bytes as the body; answers 201 with the URL to submit."""
    request, services = call.request, call.services
    allowance = await upload_allowance(services, call.tenant, time.time())
    limit = MAX_INPUT_BYTES if allowance is None else min(MAX_INPUT_BYTES, allowance)
    # Spooled and re-encoded on local disk (the artifact folder's inputs/), whatever backend then
    # keeps the image; the pruner clears spool files a crash left behind with old inputs.
    folder = Path(services.settings.artifact_dir) / "inputs"
    try:
        raw, size = await spool_upload(request, limit, folder)
    except BodyTooLarge:
        if limit < MAX_INPUT_BYTES:  # what is left of today's quota was the limit: 429, not 413
            await charge_upload(services, call.tenant, limit + 1, time.time())
        raise ApiError(413, "too_large", f"images up to {MAX_INPUT_BYTES} bytes") from None
    clean: Path | None = None
    try:
        await charge_upload(services, call.tenant, size, time.time())
        result = await asyncio.get_running_loop().run_in_executor(_decoders, _reencode, raw)
        if isinstance(result, str):
            raise ApiError(422, "invalid_image", result, [{"path": "body", "reason": result}])
        clean, ext, ctype = result
        name = f"{await asyncio.to_thread(_sha256, clean)}.{ext}"
        written = await services.artifacts.write(
            input_key(name), file_chunks(clean), max_bytes=MAX_INPUT_BYTES, content_type=ctype
        )
        stored = written.size
    finally:
        raw.unlink(missing_ok=True)
        if clean is not None:
            clean.unlink(missing_ok=True)
    url = f"{services.settings.public_url.rstrip('/')}/inputs/{name}"
    return json_response({"url": url, "content_type": ctype, "bytes": stored}, 201)


async def serve_input(request: Request) -> Response:
    """GET /inputs/<sha256>.<ext>: public, so the upstream can fetch it; the name is the secret."""
    services: Services = request.app.state.services
    name = request.path_params["name"]
    if not _NAME.match(name):
        raise ApiError(404, "not_found", "no such input")
    try:
        return await stream_object(
            services.artifacts, input_key(name), media_type=content_type_of(name), headers=inert_headers(name)
        )
    except ArtifactMissing:  # never uploaded, or deleted by the retention policy
        raise ApiError(404, "not_found", "no such input") from None
