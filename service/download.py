"""Bounded, guarded downloads of mask images from the upstream's output hosts."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass

import aiohttp
from PIL import Image
from yarl import URL

from service.urlguard import UrlPolicy, UrlRefused

_MAX_PIXELS = 3072 * 3072 * 4


class DownloadError(Exception):
    """Base of download failures."""


class DownloadGone(DownloadError):
    """The output is no longer there (404/410/403): it expired upstream."""


class DownloadInvalid(DownloadError):
    """What came back is not an acceptable image (type, size, content, or a refused URL)."""


class DownloadTransient(DownloadError):
    """A timeout, a connection error or a 5xx: trying again later may work."""


@dataclass(frozen=True, slots=True)
class Downloaded:
    data: bytes
    content_type: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class DownloadPolicy:
    urls: UrlPolicy
    """Applied to the output URL and to every redirect hop, before each request."""
    max_bytes: int
    timeout_s: float
    max_redirects: int = 3


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


async def download_image(session: aiohttp.ClientSession, url: str, policy: DownloadPolicy) -> Downloaded:
    """Fetch `url`, following at most `max_redirects` redirects, each hop checked again by the URL
    policy (host list included) before it is requested, and validate what comes back as an image."""
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
    try:
        for _ in range(policy.max_redirects + 1):
            target = policy.urls.check(url)
            # The parsed URL goes to the client as is (encoded): what was checked is what is fetched.
            async with session.get(target, allow_redirects=False, timeout=timeout) as resp:
                if resp.status in _REDIRECTS and "location" in resp.headers:
                    url = str(target.join(URL(resp.headers["location"])))
                    continue
                if resp.status in (403, 404, 410):
                    raise DownloadGone(f"output answered {resp.status}")
                if resp.status >= 500 or resp.status == 429:
                    raise DownloadTransient(f"output host answered {resp.status}")
                if resp.status != 200:
                    raise DownloadInvalid(f"output answered {resp.status}")
                content_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if not content_type.startswith("image/"):
                    raise DownloadInvalid(f"content type {content_type or '(none)'} is not an image")
                if resp.content_length is not None and resp.content_length > policy.max_bytes:
                    raise DownloadInvalid("output larger than the allowed size")
                data = await _read_bounded(resp, policy.max_bytes)
                break
        else:
            raise DownloadInvalid("too many redirects")
    except (UrlRefused, ValueError) as exc:  # a refused hop, or a Location that is no URL
        raise DownloadInvalid(str(exc)) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise DownloadTransient(f"{type(exc).__name__}: {exc}") from None
    width, height = await inspect(data)
    return Downloaded(data, content_type, hashlib.sha256(data).hexdigest(), width, height)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > limit:
            raise DownloadInvalid("output larger than the allowed size")
    return bytes(buf)


INSPECT_INLINE_BYTES = 256 * 1024
"""Up to this size an image is checked on the event loop (tens of microseconds: PIL reads the
header and the chunk checksums, it decodes no pixels); a trip to a thread costs more than that."""


async def inspect(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG or JPEG, after checking it decodes (DownloadInvalid if not)."""
    if len(data) <= INSPECT_INLINE_BYTES:
        return _inspect(data)
    return await asyncio.to_thread(_inspect, data)


def _inspect(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG or JPEG, after checking it decodes."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("PNG", "JPEG"):
                raise DownloadInvalid(f"image format {img.format} not accepted")
            if img.width * img.height > _MAX_PIXELS:
                raise DownloadInvalid("image has too many pixels")
            size = img.size
            img.verify()
    except DownloadInvalid:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DownloadInvalid(f"not a valid image: {exc}") from None
    return size
