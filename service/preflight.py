"""Preflight: before paying for a task, read the first bytes of its image (one bounded range
request, every redirect hop checked by the URL policy, connections through the guarded session) to
learn its format and size. A non-JPG/PNG image or a side over 3072 px is refused without a create;
the pixel count is the job's price estimate.

Only what the bytes prove refuses a job: a fetch that fails (timeout, 5xx, a server that will not
say) leaves the size unknown and the upstream the judge, with the worst-case estimate.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from PIL import Image

from service.artifacts import ArtifactMissing, input_key
from service.context import Services
from service.spend import MAX_SIDE, WORST_CASE_USD, estimate_of
from service.urlguard import UrlPolicy, UrlRefused, image_policy

HEAD_BYTES = 131_072
"""Enough for a PNG's header (24 bytes) and a JPEG's frame header behind its EXIF and ICC blocks."""
_MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_FORMATS = {"PNG": "png", "JPEG": "jpg"}
_INPUT_NAME = re.compile(r"^[0-9a-f]{64}\.(png|jpg)$")


@dataclass(frozen=True, slots=True)
class Preflight:
    refused: str | None = None  # why the upstream would refuse the image, when the bytes prove it
    width: int | None = None
    height: int | None = None
    format: str | None = None

    @property
    def pixels(self) -> int | None:
        return self.width * self.height if self.width and self.height else None

    @property
    def estimate_usd(self) -> float:
        return estimate_of(self.width, self.height) if self.width and self.height else WORST_CASE_USD


def inspect_head(head: bytes) -> Preflight:
    """What the first bytes of an image say about it."""
    if not head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return Preflight(refused="not a JPG or PNG image")
    try:
        with Image.open(io.BytesIO(head)) as img:
            fmt, (width, height) = img.format or "", img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return Preflight()  # a JPEG whose frame header lies past what was read: size unknown
    if fmt not in _FORMATS:
        return Preflight(refused=f"format {fmt} not accepted: JPG or PNG")
    if max(width, height) > MAX_SIDE:
        return Preflight(
            refused=f"image is {width}x{height}; each side must be at most {MAX_SIDE} px",
            width=width,
            height=height,
            format=_FORMATS[fmt],
        )
    return Preflight(width=width, height=height, format=_FORMATS[fmt])


HopCheck = Callable[[str], object]


def image_hop_check(allow_private: bool) -> HopCheck:
    """The URL policy of input images (`urlguard.image_policy`: http allowed, the upstream fetches
    them), applied to every hop."""
    return UrlPolicy(allow_private=allow_private, https_only=False).check


async def check_image(services: Services, session: aiohttp.ClientSession, url: str) -> Preflight:
    """Preflight of a job's image: an input uploaded to this segflow is read from where it is kept
    (it was checked at upload), any other URL with one bounded range request."""
    s = services.settings
    own = f"{s.public_url.rstrip('/')}/inputs/"
    if url.startswith(own) and _INPUT_NAME.match(name := url.removeprefix(own)):
        head = await _stored_head(services, input_key(name))
        if head is not None:
            return inspect_head(head)
    return await preflight(session, url, image_policy(s).check, timeout_s=s.preflight_timeout_s)


class SharedPreflights:
    """Preflights of one URL that overlap share one read (a batch often segments one image with
    many prompts): a job asking while a read of its image is in flight takes that read's answer,
    which is the image as it is now. Nothing is kept once the read ends."""

    def __init__(self, services: Services, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._services, self._session = services, session
        self._inflight: dict[str, asyncio.Future[Preflight]] = {}

    async def check(self, url: str) -> Preflight:
        pending = self._inflight.get(url)
        if pending is None:
            pending = asyncio.ensure_future(check_image(self._services, self._session(), url))
            self._inflight[url] = pending
            pending.add_done_callback(lambda done: self._forget(url, done))
        return await asyncio.shield(pending)  # one waiter cancelled does not cancel the others' read

    def _forget(self, url: str, done: asyncio.Future[Preflight]) -> None:
        self._inflight.pop(url, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have been cancelled meanwhile


async def _stored_head(services: Services, key: str) -> bytes | None:
    """The first HEAD_BYTES of a stored object (wherever artifacts are kept), None if it is gone."""
    try:
        opened = await services.artifacts.open(key)
    except ArtifactMissing:
        return None
    head = bytearray()
    try:
        async for chunk in opened.chunks:
            head += chunk
            if len(head) >= HEAD_BYTES:
                break
    finally:
        closing = getattr(opened.chunks, "aclose", None)
        if closing is not None:
            await closing()
    return bytes(head[:HEAD_BYTES])


async def preflight(session: aiohttp.ClientSession, url: str, check: HopCheck, *, timeout_s: float) -> Preflight:
    """Read the start of `url` and inspect it; a fetch that fails says nothing (size unknown)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Range": f"bytes=0-{HEAD_BYTES - 1}"}
    try:
        for _ in range(_MAX_REDIRECTS + 1):
            check(url)
            async with session.get(url, allow_redirects=False, timeout=timeout, headers=headers) as resp:
                if resp.status in _REDIRECTS and "location" in resp.headers:
                    url = urljoin(url, resp.headers["location"])
                    continue
                if resp.status not in (200, 206):
                    return Preflight()
                # A server that ignores Range sends the whole image: read only the start of it.
                head = bytearray()
                while len(head) < HEAD_BYTES and (chunk := await resp.content.read(HEAD_BYTES - len(head))):
                    head += chunk
                return inspect_head(bytes(head))
    except UrlRefused as exc:
        return Preflight(refused=f"image URL refused: {exc}")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return Preflight()
    return Preflight()
