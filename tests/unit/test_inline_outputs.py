"""Inline (base64) masks are bounded and checked like downloaded ones."""

from __future__ import annotations

import base64
import hashlib

import pytest

from service.download import DownloadInvalid, DownloadPolicy
from service.inline_outputs import inline_image, is_inline, source_of
from service.upstream.wire import INLINE_PREFIX
from service.urlguard import UrlPolicy
from tests.fixtures.sandbox import image_bytes

POLICY = DownloadPolicy(urls=UrlPolicy(allow_private=False, https_only=True), max_bytes=10_000, timeout_s=1.0)


async def test_an_inline_png_is_decoded_with_its_size_and_hash() -> None:
    png = image_bytes(30, 20)
    got = await inline_image(INLINE_PREFIX + base64.b64encode(png).decode(), POLICY)
    assert (got.data, got.width, got.height, got.sha256) == (png, 30, 20, hashlib.sha256(png).hexdigest())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (base64.b64encode(b"x" * 20_000).decode(), "larger than the allowed size"),
        ("not base64!", "not valid base64"),
        (base64.b64encode(b"GIF89a not a png").decode(), "not a valid image"),
        (base64.b64encode(image_bytes(10, 10, "GIF")).decode(), "not accepted"),
    ],
)
async def test_oversized_garbled_or_foreign_inline_outputs_are_refused(payload: str, reason: str) -> None:
    with pytest.raises(DownloadInvalid, match=reason):
        await inline_image(INLINE_PREFIX + payload, POLICY)


def test_an_inline_mask_is_recorded_by_name_not_by_its_bytes() -> None:
    assert is_inline(INLINE_PREFIX + "AAAA") and not is_inline("https://img.theapi.app/temp/a.png")
    assert source_of(INLINE_PREFIX + "AAAA", 1) == "inline:image_base64s[1]"
    assert source_of("https://x/a.png", 0) == "https://x/a.png"
