"""Throughput of the data transforms on one core vs a straightforward per-image PIL loop.

  python tools/bench/pipeline.py [--repeats 5] [--images 8]

Measures, in the same run and process (pinned to one core):
  - 3x3 image jigsaw of a 448 x 448 photo: `ImageJigsaw.apply` (numpy views,
    permutation, target, prompt) vs cropping the 9 tiles with PIL, converting
    each to an array and shuffling them (the released code's approach);
  - PISM masks, 10 ratios x 10 attempts per image: `masking.mask_images` (one
    vectorised call for the whole batch) vs drawing each variant with PIL on a
    copy and converting it to an array, for each mode.
Prints samples (images) per second for both and their ratio (target: >= 5x).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from mmjax.data import jigsaw, masking

SIZE = 448
RATIOS = masking.DEFAULT_RATIOS
ATTEMPTS = 10


def _photo() -> np.ndarray:
    try:
        import skimage.data  # pylint: disable=g-import-not-at-top

        return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((SIZE, SIZE)))
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _rate(fn: Callable[[], object], samples: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return samples / statistics.median(times)


# --- references: one image, one variant at a time, with PIL ------------------


def pil_jigsaw(image: Image.Image, rows: int, cols: int) -> tuple[list[np.ndarray], list[int]]:
    width, height = image.size
    xs = jigsaw.split_bounds(width, cols)
    ys = jigsaw.split_bounds(height, rows)
    tiles = [np.asarray(image.crop((int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))))
             for r in range(rows) for c in range(cols)]
    order = list(range(rows * cols))
    random.shuffle(order)
    target = [order.index(i) + 1 for i in range(len(order))]
    return [tiles[j] for j in order], target


def pil_masks(image: Image.Image, mode: str, rng: np.random.Generator) -> np.ndarray:
    width, height = image.size
    black = Image.new("RGB", image.size)
    out = []
    for ratio in RATIOS:
        for _ in range(ATTEMPTS):
            variant = image.copy()
            if ratio > 0 and mode == "rectangle":
                w, h = max(1, int(width * ratio**0.5)), max(1, int(height * ratio**0.5))
                x, y = random.randint(0, width - w), random.randint(0, height - h)
                ImageDraw.Draw(variant).rectangle((x, y, x + w - 1, y + h - 1), fill=(0, 0, 0))
            elif ratio > 0 and mode == "pixels":
                mask = Image.fromarray(((rng.random((height, width)) < ratio) * 255).astype(np.uint8))
                variant = Image.composite(black, variant, mask)
            elif ratio > 0 and mode == "patches":
                grid_w, grid_h = -(-width // 28), -(-height // 28)
                draw = ImageDraw.Draw(variant)
                for p in rng.choice(grid_w * grid_h, round(ratio * grid_w * grid_h), replace=False):
                    x, y = (p % grid_w) * 28, (p // grid_w) * 28
                    draw.rectangle((x, y, x + 27, y + 27), fill=(0, 0, 0))
            out.append(np.asarray(variant))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=8, help="images per masking batch")
    parser.add_argument("--jigsaw_samples", type=int, default=200)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    photo = _photo()
    pil_photo = Image.fromarray(photo)
    rows = []

    transform = jigsaw.ImageJigsaw(rows=3, cols=3)
    generators = [np.random.default_rng(i) for i in range(args.jigsaw_samples)]
    ours = _rate(lambda: [transform.apply({"images": [photo]}, g) for g in generators],
                 args.jigsaw_samples, args.repeats)
    reference = _rate(lambda: [pil_jigsaw(pil_photo, 3, 3) for _ in generators],
                      args.jigsaw_samples, args.repeats)
    rows.append(("image jigsaw 3x3 @ 448 px", ours, reference))

    batch = np.stack([photo] * args.images)
    for mode in masking.MODES:
        rng = np.random.default_rng(0)
        ours = _rate(lambda: masking.mask_images(batch, rng, RATIOS, ATTEMPTS, mode), args.images,
                     args.repeats)
        reference = _rate(lambda: [pil_masks(pil_photo, mode, rng) for _ in range(args.images)],
                          args.images, args.repeats)
        rows.append((f"PISM {mode} masks 10 ratios x 10 attempts @ 448 px", ours, reference))

    print(f"{'transform':52s} {'mmjax /s':>10s} {'PIL loop /s':>12s} {'ratio':>7s}")
    for name, ours, reference in rows:
        print(f"{name:52s} {ours:10.1f} {reference:12.1f} {ours / reference:6.1f}x")


if __name__ == "__main__":
    main()
