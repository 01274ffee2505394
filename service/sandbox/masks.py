"""Synthetic masks: a real PNG of the input's size, reproducible from the input and the prompts.

Not a segmentation: a few shapes placed by a hash, so the same request always yields the same bytes
and a different prompt yields a different mask. Drawing filled shapes keeps a 3072x3072 mask cheap.
"""

from __future__ import annotations

import hashlib
import io
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

SYNTHETIC_NOTE = "synthetic sandbox mask: not a real segmentation"
_MAX_TERMS = 8


@dataclass(frozen=True)
class MaskSpec:
    """Everything a mask depends on; two equal specs give byte-identical PNGs."""

    image_sha256: str
    width: int
    height: int
    prompt: str
    negative_prompt: str
    segment_factor: int


def render_mask(spec: MaskSpec) -> bytes:
    """PNG bytes, mode "L", values 0/255, with a tEXt chunk saying the mask is synthetic."""
    mask = Image.new("L", (spec.width, spec.height), 0)
    draw = ImageDraw.Draw(mask)
    rng = random.Random(_seed(spec))
    for _ in _terms(spec.prompt):
        for _shape in range(rng.randint(1, 2)):
            _draw_shape(draw, rng, spec, grow=spec.segment_factor, fill=255, scale=(0.10, 0.30))
    for _ in _terms(spec.negative_prompt):
        _draw_shape(draw, rng, spec, grow=0, fill=0, scale=(0.05, 0.15))
    info = PngInfo()
    info.add_text("Comment", SYNTHETIC_NOTE)
    info.add_text("Software", "segflow sandbox")
    out = io.BytesIO()
    mask.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _seed(spec: MaskSpec) -> int:
    material = "\x1f".join((spec.image_sha256, spec.prompt, spec.negative_prompt)).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def _terms(prompt: str) -> list[str]:
    return [t.strip() for t in prompt.split(",") if t.strip()][:_MAX_TERMS]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    spec: MaskSpec,
    *,
    grow: int,
    fill: int,
    scale: tuple[float, float],
) -> None:
    side = min(spec.width, spec.height)
    cx = rng.uniform(0.2, 0.8) * spec.width
    cy = rng.uniform(0.2, 0.8) * spec.height
    rx = rng.uniform(*scale) * side + grow
    ry = rng.uniform(*scale) * side + grow
    ellipse = rng.random() < 0.6
    if rx < 1 or ry < 1:
        return  # shrunk away by a negative segment_factor
    box = (cx - rx, cy - ry, cx + rx, cy + ry)
    if ellipse:
        draw.ellipse(box, fill=fill)
    else:
        draw.rectangle(box, fill=fill)
