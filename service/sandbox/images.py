"""Fetching and checking the input image, as the real service does before accepting a task."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import aiohttp
from PIL import Image, UnidentifiedImageError

from service.sandbox.wire import invalid

ACCEPTED_FORMATS = ("JPEG", "PNG")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class InputImage:
    """What the sandbox keeps of an input image: enough to size and seed its mask, not the bytes."""

    sha256: str
    width: int
    height: int
    format: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


async def fetch_image(
    session: aiohttp.ClientSession, url: str, *, max_bytes: int, timeout_s: float, max_side_px: int
) -> InputImage:
    """Download `url` (bounded in size and time) and check it; SandboxError(400) says what is wrong."""
    data = await _download(session, url, max_bytes=max_bytes, timeout_s=timeout_s)
    return probe_image(data, max_side_px=max_side_px)


async def _download(session: aiohttp.ClientSession, url: str, *, max_bytes: int, timeout_s: float) -> bytes:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise invalid(f"could not fetch input.image: HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise invalid(f"input.image is larger than {max_bytes} bytes")
            buffer = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                buffer += chunk
                if len(buffer) > max_bytes:
                    raise invalid(f"input.image is larger than {max_bytes} bytes")
            return bytes(buffer)
    except TimeoutError as exc:
        raise invalid(f"could not fetch input.image: no answer within {timeout_s:g} s") from exc
    except aiohttp.ClientError as exc:
        raise invalid(f"could not fetch input.image: {type(exc).__name__}") from exc


def probe_image(data: bytes, *, max_side_px: int) -> InputImage:
    """Read format and size from the header only, so a huge image costs nothing to reject."""
    try:
        # A decompression-bomb warning is a size problem we report ourselves below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or "unknown"
                width, height = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise invalid("input.image is not a readable JPG or PNG image") from exc
    if fmt not in ACCEPTED_FORMATS:
        raise invalid(f"input.image must be a JPG or PNG image, got {fmt}")
    if width > max_side_px or height > max_side_px:
        raise invalid(f"input.image is {width}x{height} px; each side must be at most {max_side_px} px")
    return InputImage(sha256=hashlib.sha256(data).hexdigest(), width=width, height=height, format=fmt)
