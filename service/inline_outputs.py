"""Masks the upstream sends inline (`output.image_base64s`), checked like downloaded ones.

The wire decoder hands them on as `data:image/png;base64,…` URLs in the job's output list, so the
fetcher has one list to store; this module turns such a URL into the same `Downloaded` a download
gives, with the same size bound and image checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from service.download import Downloaded, DownloadInvalid, DownloadPolicy, inspect
from service.upstream.wire import INLINE_PREFIX


def is_inline(url: str) -> bool:
    return url.startswith(INLINE_PREFIX)


async def inline_image(url: str, policy: DownloadPolicy) -> Downloaded:
    """Decode an inline mask; DownloadInvalid if it is larger than a download may be or not an image."""
    encoded = url[len(INLINE_PREFIX) :]
    if len(encoded) > (policy.max_bytes + 2) // 3 * 4:  # refuse before decoding anything too big
        raise DownloadInvalid("inline output larger than the allowed size")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DownloadInvalid("inline output is not valid base64") from None
    width, height = await inspect(data)
    return Downloaded(data, "image/png", hashlib.sha256(data).hexdigest(), width, height)


def source_of(url: str, idx: int) -> str:
    """What an artifact records as its source: the URL, or a short name for an inline mask."""
    return f"inline:image_base64s[{idx}]" if is_inline(url) else url
