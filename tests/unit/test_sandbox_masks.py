"""Synthetic masks: right size and mode, binary, marked synthetic, reproducible, prompt-dependent."""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image

from service.sandbox.masks import SYNTHETIC_NOTE, MaskSpec, render_mask

SPEC = MaskSpec(
    image_sha256="ab" * 32,
    width=320,
    height=240,
    prompt="clothes,shoes",
    negative_prompt="pants",
    segment_factor=0,
)


def white_pixels(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as mask:
        return mask.histogram()[255]


def test_mask_is_a_marked_binary_png_of_the_given_size() -> None:
    with Image.open(io.BytesIO(render_mask(SPEC))) as mask:
        assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (320, 240))
        assert [v for v, count in enumerate(mask.histogram()) if count] == [0, 255]
        assert mask.info["Comment"] == SYNTHETIC_NOTE


def test_same_spec_gives_the_same_bytes_and_any_change_changes_them() -> None:
    base = render_mask(SPEC)
    assert render_mask(SPEC) == base
    for change in (
        {"prompt": "hat"},
        {"negative_prompt": ""},
        {"image_sha256": "cd" * 32},
        {"segment_factor": 10},
    ):
        assert render_mask(replace(SPEC, **change)) != base


def test_segment_factor_grows_and_shrinks_the_mask() -> None:
    assert white_pixels(render_mask(replace(SPEC, segment_factor=-10))) < white_pixels(render_mask(SPEC))
    assert white_pixels(render_mask(replace(SPEC, segment_factor=10))) > white_pixels(render_mask(SPEC))


def test_largest_input_is_cheap_enough() -> None:
    png = render_mask(replace(SPEC, width=3072, height=3072))
    with Image.open(io.BytesIO(png)) as mask:
        assert mask.size == (3072, 3072)
