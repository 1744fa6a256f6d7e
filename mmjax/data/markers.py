"""Numbered point markers for the 3D (depth-ordering) jigsaw, SPEC 1.3."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def draw_markers(image: np.ndarray, points: Sequence[tuple[int, int]], labels: Sequence[str],
                 radius: int = 15, alpha: int = 120, outline: int = 2) -> np.ndarray:
    """Draws numbered markers at (row, col) points on an RGB uint8 image.

    Each marker is a red disc of `radius` px blended at `alpha`/255, a `outline`
    px opaque red rim, and its label in white, centred. Returns a new array.
    """
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} points but {len(labels)} labels")
    base = Image.fromarray(image).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    # Pillow's bundled font, so the rendering does not depend on installed fonts.
    font = ImageFont.load_default(size=radius)
    for (row, col), label in zip(points, labels):
        box = (col - radius, row - radius, col + radius, row + radius)
        draw.ellipse(box, fill=(*RED, alpha), outline=(*RED, 255), width=outline)
        draw.text((col, row), str(label), fill=(*WHITE, 255), font=font, anchor="mm")
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))
