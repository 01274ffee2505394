"""Small sample pictures for demos, drawn at start-up so the sandbox needs no files or internet."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class Sample:
    name: str
    content_type: str
    width: int
    height: int
    data: bytes


def _street(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.rectangle((0, 0, w, h * 0.55), fill=(135, 180, 225))
    draw.rectangle((0, h * 0.55, w, h), fill=(90, 90, 95))
    draw.rectangle((w * 0.15, h * 0.55, w * 0.55, h * 0.75), fill=(200, 30, 40))  # a car body
    draw.ellipse((w * 0.18, h * 0.70, w * 0.28, h * 0.82), fill=(20, 20, 20))
    draw.ellipse((w * 0.42, h * 0.70, w * 0.52, h * 0.82), fill=(20, 20, 20))
    draw.rectangle((w * 0.70, h * 0.20, w * 0.90, h * 0.80), fill=(160, 120, 80))  # a building


def _portrait(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.rectangle((0, 0, w, h), fill=(235, 225, 210))
    draw.ellipse((w * 0.35, h * 0.10, w * 0.65, h * 0.32), fill=(225, 185, 150))  # head
    draw.rectangle((w * 0.28, h * 0.32, w * 0.72, h * 0.62), fill=(40, 90, 160))  # shirt
    draw.rectangle((w * 0.32, h * 0.62, w * 0.68, h * 0.88), fill=(50, 50, 60))  # trousers
    draw.rectangle((w * 0.30, h * 0.88, w * 0.48, h * 0.94), fill=(120, 60, 30))  # shoes
    draw.rectangle((w * 0.52, h * 0.88, w * 0.70, h * 0.94), fill=(120, 60, 30))


def _shapes(draw: ImageDraw.ImageDraw, w: int, h: int) -> None:
    draw.rectangle((0, 0, w, h), fill=(250, 250, 250))
    draw.ellipse((w * 0.10, h * 0.15, w * 0.40, h * 0.55), fill=(230, 160, 20))
    draw.rectangle((w * 0.50, h * 0.20, w * 0.85, h * 0.60), fill=(30, 150, 90))
    draw.polygon([(w * 0.2, h * 0.9), (w * 0.45, h * 0.6), (w * 0.7, h * 0.9)], fill=(120, 40, 160))


_PAINTERS: tuple[tuple[str, str, int, int, Callable[[ImageDraw.ImageDraw, int, int], None]], ...] = (
    ("street.jpg", "JPEG", 640, 480, _street),
    ("portrait.jpg", "JPEG", 480, 640, _portrait),
    ("shapes.png", "PNG", 640, 480, _shapes),
)


def build_samples() -> dict[str, Sample]:
    """The sample pictures by file name; deterministic bytes for a given Pillow build."""
    samples: dict[str, Sample] = {}
    for name, fmt, w, h, paint in _PAINTERS:
        img = Image.new("RGB", (w, h))
        paint(ImageDraw.Draw(img), w, h)
        out = io.BytesIO()
        img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        content_type = "image/jpeg" if fmt == "JPEG" else "image/png"
        samples[name] = Sample(name=name, content_type=content_type, width=w, height=h, data=out.getvalue())
    return samples
