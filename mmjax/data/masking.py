"""PISM masks (SPEC 2.1), vectorised over images x ratios x attempts in one call.

Modes (mask value True = pixel set to black):
  rectangle  released code, default: one rectangle of floor(W*sqrt(l)) x
             floor(H*sqrt(l)) px (at least 1 px when l > 0) at a uniformly random
             integer position fully inside the image.
  pixels     paper: each pixel masked independently with probability l, so the
             masked fraction is l in expectation (std sqrt(l(1-l)/HW), 0.1% at 448 px).
  patches    exactly round(l * P) of the P patch_size x patch_size patches, chosen
             uniformly without replacement; aligned with the vision tokens when the
             image is at the model's resolution (sides multiples of 28). A partial
             last row/column of patches counts as a patch.
A ratio of 0 gives an empty mask in every mode.

All images in one call share a size. Images of different sizes: call
`mask_images_by_size`, which groups them by size and makes one call per group,
or make masks per image from the boolean arrays this module returns.
"""

from __future__ import annotations

import collections
from typing import Sequence

import numpy as np

MODES = ("rectangle", "pixels", "patches")
DEFAULT_RATIOS = tuple(round(0.1 * i, 1) for i in range(10))


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(ratios: Sequence[float], mode: str) -> np.ndarray:
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or np.any((ratios < 0) | (ratios > 1)):
        raise ValueError(f"ratios must be a list of values in [0, 1], got {ratios.tolist()}")
    if mode not in MODES:
        raise ValueError(f"unknown mask mode {mode!r}; expected one of {MODES}")
    return ratios


def rectangle_size(ratio: float | np.ndarray, length: int) -> np.ndarray:
    """Side of the SPEC rectangle along a side of `length` px: floor(length*sqrt(ratio))."""
    ratio = np.asarray(ratio, dtype=np.float64)
    side = np.floor(length * np.sqrt(ratio)).astype(np.int64)
    return np.where(ratio > 0, np.clip(side, 1, length), 0)


# The three draws below are the only randomness; `make_masks` and `mask_images`
# both use them, so the same seed gives the same masks either way.


def _draw_boxes(rng: np.random.Generator, shape: tuple[int, int, int], ratios: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """(top, left, box_height, box_width) per image, ratio and attempt: int64 (*shape, 4)."""
    box_h = np.broadcast_to(rectangle_size(ratios, height)[None, :, None], shape)
    box_w = np.broadcast_to(rectangle_size(ratios, width)[None, :, None], shape)
    top = np.floor(rng.random(shape) * (height - box_h + 1)).astype(np.int64)
    left = np.floor(rng.random(shape) * (width - box_w + 1)).astype(np.int64)
    return np.stack([top, left, box_h, box_w], axis=-1)


def _draw_pixels(rng: np.random.Generator, shape: tuple[int, int, int], ratios: np.ndarray,
                 height: int, width: int) -> np.ndarray:
    """Bernoulli(ratio) per pixel: bool (*shape, H, W). 16-bit draws: p exact to 2**-16."""
    thresholds = np.round(ratios * 65536).astype(np.uint32)[None, :, None, None, None]
    return rng.integers(0, 65536, (*shape, height, width), dtype=np.uint16) < thresholds


def _draw_patches(rng: np.random.Generator, shape: tuple[int, int, int], ratios: np.ndarray,
                  grid_h: int, grid_w: int) -> np.ndarray:
    """Exactly round(ratio * P) of the P patches: bool (*shape, grid_h, grid_w)."""
    num_patches = grid_h * grid_w
    counts = np.round(ratios * num_patches).astype(np.int64)[None, :, None, None]
    # Rank of each patch in a random order; the `count` lowest ranks are masked.
    ranks = np.argsort(rng.random((*shape, num_patches)), axis=-1).argsort(axis=-1)
    return (ranks < counts).reshape(*shape, grid_h, grid_w)


def _grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    return -(-height // patch_size), -(-width // patch_size)


def make_masks(rng: np.random.Generator | int, num_images: int, height: int, width: int,
               ratios: Sequence[float] = DEFAULT_RATIOS, attempts: int = 10,
               mode: str = "rectangle", patch_size: int = 28) -> np.ndarray:
    """Boolean masks (num_images, len(ratios), attempts, height, width); True = black."""
    ratios = _check(ratios, mode)
    rng = _rng(rng)
    shape = (num_images, len(ratios), attempts)
    if mode == "pixels":
        return _draw_pixels(rng, shape, ratios, height, width)
    if mode == "patches":
        chosen = _draw_patches(rng, shape, ratios, *_grid(height, width, patch_size))
        full = np.repeat(np.repeat(chosen, patch_size, axis=-2), patch_size, axis=-1)
        return full[..., :height, :width]
    top, left, box_h, box_w = np.moveaxis(_draw_boxes(rng, shape, ratios, height, width), -1, 0)
    rows, cols = np.arange(height), np.arange(width)
    in_rows = (rows >= top[..., None]) & (rows < (top + box_h)[..., None])
    in_cols = (cols >= left[..., None]) & (cols < (left + box_w)[..., None])
    return in_rows[..., :, None] & in_cols[..., None, :]


def apply_masks(images: np.ndarray, masks: np.ndarray, fill: int = 0) -> np.ndarray:
    """Masked copies (I, R, A, H, W, C) of images (I, H, W, C) under masks (I, R, A, H, W)."""
    if images.shape[:1] + images.shape[1:3] != masks.shape[:1] + masks.shape[3:]:
        raise ValueError(f"images {images.shape} do not match masks {masks.shape}")
    return np.where(masks[..., None], np.asarray(fill, images.dtype), images[:, None, None])


def _copies(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(I, R, A, H, W, C) copies of each image: a broadcast memcpy, the fastest fill."""
    return np.broadcast_to(images[:, None, None], (*shape, *images.shape[1:])).copy()


def _zero_where(out: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """out[..., c] *= ~masked per channel (contiguous inner loops beat a 3-wide broadcast)."""
    keep = (~masked).view(np.uint8)
    for channel in range(out.shape[-1]):
        np.multiply(out[..., channel], keep, out=out[..., channel])
    return out


def mask_images(images: np.ndarray, rng: np.random.Generator | int,
                ratios: Sequence[float] = DEFAULT_RATIOS, attempts: int = 10,
                mode: str = "rectangle", patch_size: int = 28) -> np.ndarray:
    """Every masked variant (I, R, A, H, W, C) of a batch of same-size images (I, H, W, C).

    Equal to `apply_masks(images, make_masks(...))` for the same rng state, without
    building pixel masks where the mode allows.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (I, H, W, C), got {images.shape}")
    ratios = _check(ratios, mode)
    rng = _rng(rng)
    num_images, height, width, _ = images.shape
    shape = (num_images, len(ratios), attempts)
    if mode == "pixels":
        return _zero_where(_copies(images, shape), _draw_pixels(rng, shape, ratios, height, width))
    if mode == "patches":
        grid_h, grid_w = _grid(height, width, patch_size)
        chosen = _draw_patches(rng, shape, ratios, grid_h, grid_w)
        if height % patch_size or width % patch_size:
            full = np.repeat(np.repeat(chosen, patch_size, axis=-2), patch_size, axis=-1)
            return _zero_where(_copies(images, shape), full[..., :height, :width])
        out = _copies(images, shape)
        blocks = out.reshape(*shape, grid_h, patch_size, grid_w, patch_size, -1)
        np.multiply(blocks, (~chosen).view(np.uint8)[..., :, None, :, None, None], out=blocks)
        return out
    out = _copies(images, shape)
    boxes = _draw_boxes(rng, shape, ratios, height, width)
    # One slice assignment per box touches only the box: faster than any full-size mask.
    flat_out = out.reshape(-1, *images.shape[1:])
    for variant, (top, left, box_h, box_w) in zip(flat_out, boxes.reshape(-1, 4).tolist()):
        variant[top:top + box_h, left:left + box_w] = 0
    return out


def mask_images_by_size(images: Sequence[np.ndarray], rng: np.random.Generator | int,
                        ratios: Sequence[float] = DEFAULT_RATIOS, attempts: int = 10,
                        mode: str = "rectangle", patch_size: int = 28) -> list[np.ndarray]:
    """`mask_images` for images of mixed sizes: one vectorised call per distinct size.

    Returns one (R, A, H, W, C) array per input image, in input order. Groups are
    visited in order of first appearance, so results are reproducible from a seed.
    """
    rng = _rng(rng)
    groups: dict[tuple[int, ...], list[int]] = collections.defaultdict(list)
    for i, image in enumerate(images):
        groups[np.shape(image)].append(i)
    out: list[np.ndarray | None] = [None] * len(images)
    for members in groups.values():
        masked = mask_images(np.stack([images[i] for i in members]), rng, ratios, attempts, mode,
                             patch_size)
        for i, result in zip(members, masked):
            out[i] = result
    return out  # type: ignore[return-value]
