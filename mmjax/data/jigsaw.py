"""Jigsaw building blocks (SPEC 1) and the image jigsaw task (SPEC 1.1).

Target convention (SPEC 1, general form): pieces are shown in the order
`order`, i.e. shown number j+1 is original piece `order[j]`; the target lists,
for each original piece i in canonical order, the number it was shown under:
`target[i] = position of i in order + 1`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmjax.data import prompts
from mmjax.data.skips import Skipped
from mmjax.data.tasks import TaskTransform, make_sample

PATCH = 28  # Qwen2.5-VL's merged patch side: every tile must hold at least one.


def shuffle_pieces(num_pieces: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns (order, target): a random display order and its 1-based target."""
    order = rng.permutation(num_pieces)
    return order, target_from_order(order)


def target_from_order(order: np.ndarray) -> np.ndarray:
    """target[i] = 1-based shown position of original piece i."""
    order = np.asarray(order)
    target = np.empty_like(order)
    target[order] = np.arange(1, len(order) + 1)
    return target


def format_order(target: np.ndarray) -> str:
    return ",".join(str(int(t)) for t in target)


def split_bounds(length: int, parts: int) -> np.ndarray:
    """Boundaries of `parts` contiguous spans of `length`; the first spans get the extra unit."""
    base, extra = divmod(length, parts)
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def split_tiles(image: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """Tiles of an (H, W, ...) array in raster order, as views (no copy)."""
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid must be positive, got {rows}x{cols}")
    ys = split_bounds(image.shape[0], rows)
    xs = split_bounds(image.shape[1], cols)
    return [image[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] for r in range(rows) for c in range(cols)]


def assemble_tiles(tiles: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Inverse of `split_tiles`: tiles in raster order back into one array."""
    if len(tiles) != rows * cols:
        raise ValueError(f"{len(tiles)} tiles for a {rows}x{cols} grid")
    return np.concatenate(
        [np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def min_image_side(rows: int, cols: int) -> int:
    return PATCH * max(rows, cols)


@dataclasses.dataclass(frozen=True)
class ImageJigsaw(TaskTransform):
    """SPEC 1.1: one image -> rows x cols tiles shown as separate images, shuffled.

    Images whose shorter side is below 28 * max(rows, cols) are skipped
    ("image_too_small") so that every tile holds at least one 28 px patch.
    """

    rows: int = 3
    cols: int = 3

    def apply(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | Skipped:
        if len(row.get("images", ())) != 1:
            return self.skip(row, "jigsaw_needs_one_image",
                             f"got {len(row.get('images', ()))} images")
        image = row["images"][0]
        height, width = image.shape[:2]
        if min(height, width) < min_image_side(self.rows, self.cols):
            return self.skip(row, "image_too_small",
                             f"{height}x{width} < {min_image_side(self.rows, self.cols)} px for a"
                             f" {self.rows}x{self.cols} grid")
        tiles = split_tiles(image, self.rows, self.cols)
        order, target = shuffle_pieces(len(tiles), rng)
        content = prompts.image_jigsaw_content(self.rows, self.cols, self.container)
        return make_sample(row, task="jigsaw_image", messages=[prompts.user_message(content)],
                           images=[tiles[j] for j in order], solution=format_order(target),
                           container=self.container)
