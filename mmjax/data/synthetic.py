"""Synthetic data with verifiable answers, for tests and the CPU demo.

- `ShapesVqaSource`: coloured shapes on bundled photos (skimage.data) or plain
  backgrounds, with counting, colour and position questions.
- `ColourChoiceSource`: one large shape whose colour is the answer (the CPU demo's task);
  `graded=True` varies its size and contrast and adds smaller distractors, row by row.
- `SyntheticRgbdSource` / `write_rgbd_scenes`: RGB-D frames of a room (far wall,
  receding floor) with boxes at known depths, for the 3D jigsaw.
- `moving_shapes_video` / `write_moving_shapes_video`: a square crossing the
  frame while the background brightens with time, so frame order is recoverable.
Every item is a pure function of (seed, index).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmjax.data import images as images_lib
from mmjax.data import video as video_lib
from mmjax.data.rng import record_rng

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 50), "blue": (40, 70, 230),
           "yellow": (240, 210, 20)}
KINDS = ("circle", "square", "triangle")
# Bundled with scikit-image (no download needed).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
OPTION_LETTERS = "ABCD"


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as RGB uint8."""
    try:
        import skimage.data  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise ImportError("photo backgrounds need scikit-image; use background='plain'") from e
    return getattr(skimage.data, name)()


def background(rng: np.random.Generator, size: tuple[int, int], kind: str) -> np.ndarray:
    """A (height, width, 3) uint8 background: "plain" (one random colour) or "photos" (a random
    bundled photo, scaled to cover `size` and cropped at a random place); drawn from `rng`."""
    height, width = size
    if kind == "plain":
        colour = rng.integers(90, 200, size=3)
        return np.broadcast_to(colour.astype(np.uint8), (height, width, 3)).copy()
    if kind != "photos":
        raise ValueError(f"background must be 'photos' or 'plain', got {kind!r}")
    image = photo(PHOTOS[rng.integers(len(PHOTOS))])
    scale = max(height / image.shape[0], width / image.shape[1])
    resized = Image.fromarray(image).resize(
        (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale))),
        Image.Resampling.BILINEAR)
    top = rng.integers(resized.height - height + 1)
    left = rng.integers(resized.width - width + 1)
    return np.asarray(resized)[top:top + height, left:left + width].copy()


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    row: int
    col: int
    radius: int
    fill: tuple[int, int, int] | None = None  # drawn in this RGB instead of COLOURS[colour]


def place_shapes(rng: np.random.Generator, size: tuple[int, int], count: int) -> list[Shape]:
    """Up to `count` shapes of random kind and colour inside a `size` image, none overlapping.

    Radius min(size) // 12 (at least 6), centres at least 2.2 radii apart; drawn from `rng` by
    rejection sampling, so fewer than `count` come back only when they do not fit.
    """
    height, width = size
    radius = max(6, min(height, width) // 12)
    shapes: list[Shape] = []
    for _ in range(200 * count):  # Rejection sampling for non-overlapping shapes.
        if len(shapes) == count:
            break
        row = int(rng.integers(radius, height - radius))
        col = int(rng.integers(radius, width - radius))
        if all((row - s.row) ** 2 + (col - s.col) ** 2 >= (2.2 * radius) ** 2 for s in shapes):
            shapes.append(Shape(KINDS[rng.integers(len(KINDS))], list(COLOURS)[rng.integers(len(COLOURS))],
                                row, col, radius))
    return shapes


def draw_shapes(image: np.ndarray, shapes: list[Shape]) -> np.ndarray:
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    for s in shapes:
        box = (s.col - s.radius, s.row - s.radius, s.col + s.radius, s.row + s.radius)
        fill, outline = s.fill or COLOURS[s.colour], (0, 0, 0)
        if s.kind == "circle":
            draw.ellipse(box, fill=fill, outline=outline, width=2)
        elif s.kind == "square":
            draw.rectangle(box, fill=fill, outline=outline, width=2)
        else:
            draw.polygon([(s.col, s.row - s.radius), (s.col - s.radius, s.row + s.radius),
                          (s.col + s.radius, s.row + s.radius)], fill=fill, outline=outline, width=2)
    return np.asarray(pil)


def _choice(question: str, options: list[str], answer: str) -> tuple[str, str]:
    lines = [question, "Options:"] + [f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options)]
    lines.append("Answer with the option letter.")
    return "\n".join(lines), OPTION_LETTERS[options.index(answer)]


def shapes_question(rng: np.random.Generator, shapes: list[Shape], width: int) -> tuple[str, str, str]:
    """(question, solution, task) about `shapes`; the answer follows from the shapes alone."""
    unique = [s for s in shapes if sum(t.kind == s.kind for t in shapes) == 1]
    kind = int(rng.integers(3)) if unique else 0
    if kind == 1:
        target = unique[rng.integers(len(unique))]
        question, answer = _choice(f"What colour is the {target.kind}?", list(COLOURS), target.colour)
        return question, answer, "choice"
    if kind == 2:
        target = unique[rng.integers(len(unique))]
        side = "left" if target.col < width / 2 else "right"
        question, answer = _choice(f"Is the {target.kind} in the left or the right half of the image?",
                                   ["left", "right"], side)
        return question, answer, "choice"
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    count = sum(s.colour == colour for s in shapes)
    return f"How many {colour} shapes are there in the image?", str(count), "counting"


class ShapesVqaSource:
    """Random-access source of shape VQA rows; row i is a pure function of (seed, i)."""

    def __init__(self, num_samples: int, seed: int = 0, size: tuple[int, int] = (224, 224),
                 background: str = "plain", shapes_per_image: tuple[int, int] = (2, 6)):
        # Shapes are radius min(size)//12 and at least 2.2 radii apart: keep the
        # upper bound well below what fits, or rejection sampling would fall short.
        self.num_samples, self.seed, self.size = num_samples, seed, tuple(size)
        self.background, self.shapes_per_image = background, shapes_per_image

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:  # what an error naming the data shows
        return f"ShapesVqaSource({self.num_samples} rows, seed={self.seed})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = record_rng(self.seed, 0, index)
        image = background(rng, self.size, self.background)
        low, high = self.shapes_per_image
        shapes = place_shapes(rng, self.size, int(rng.integers(low, high + 1)))
        question, solution, task = shapes_question(rng, shapes, self.size[1])
        return {
            "id": f"shapes-{index}", "where": f"ShapesVqaSource(seed={self.seed})[{index}]",
            "images": [draw_shapes(image, shapes)], "videos": [], "messages": None,
            "prompt": "<image>" + question, "solution": solution, "task": task,
            "extra": {"shapes": [dataclasses.asdict(s) for s in shapes]},
        }


# graded=True: each row draws one value of each factor, uniformly (the factors are independent).
GRADED_SCALES = (1.0, 0.55, 0.3)  # the shape's radius, as a fraction of the plain task's (min side / 3)
GRADED_CONTRASTS = (1.0, 0.5, 0.25)  # its fill: background mean + contrast x (its colour - background mean)
GRADED_DISTRACTORS = (0, 1, 2)  # smaller shapes (half its radius, >= 4 px) in the other colours, full contrast


class ColourChoiceSource:
    """One large shape on a bundled photo: "what colour is the shape?", options in a fixed order.

    The answer (an option letter) follows from the image alone, and the options never move,
    so a policy can learn it from the pixels: the CPU demo's GRPO task. Row i is a pure
    function of (seed, i); the colour cycles through COLOURS by index, so classes are balanced.

    `graded=True` makes difficulty vary from row to row (issue 21's paradigm demo needs samples
    a partly trained policy solves at different rates): the shape shrinks (GRADED_SCALES), fades
    into the background (GRADED_CONTRASTS) and has smaller distractors of other colours
    (GRADED_DISTRACTORS); the question asks for the largest shape. The factors are drawn after
    everything the plain task draws, and are in the row's "extra".
    """

    QUESTION = "What colour is the shape?"
    GRADED_QUESTION = "What colour is the largest shape?"

    def __init__(self, num_samples: int, seed: int = 0, size: tuple[int, int] = (112, 112),
                 background: str = "photos", graded: bool = False):
        self.num_samples, self.seed, self.size, self.background = num_samples, seed, tuple(size), background
        self.graded = graded

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:  # what an error naming the data shows
        return f"ColourChoiceSource({self.num_samples} rows, seed={self.seed}{', graded' if self.graded else ''})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rng = record_rng(self.seed, 0, index)
        height, width = self.size
        colour = list(COLOURS)[index % len(COLOURS)]
        radius = min(height, width) // 3
        shape = Shape(KINDS[rng.integers(len(KINDS))], colour, int(rng.integers(radius, height - radius + 1)),
                      int(rng.integers(radius, width - radius + 1)), radius)
        image = background(rng, self.size, self.background)
        shapes, extra = [shape], {"colour": colour}
        if self.graded:
            shapes, factors = _graded(rng, shape, image)
            extra.update(factors)
        question, solution = _choice(self.GRADED_QUESTION if self.graded else self.QUESTION, list(COLOURS), colour)
        where = f"ColourChoiceSource(seed={self.seed}{', graded' if self.graded else ''})[{index}]"
        return {
            "id": f"colour-{self.seed}-{index}", "where": where,
            "images": [draw_shapes(image, shapes)], "videos": [],
            "messages": None, "prompt": "<image>" + question, "solution": solution, "task": "choice",
            "extra": extra,
        }


def _graded(rng: np.random.Generator, shape: Shape, image: np.ndarray) -> tuple[list[Shape], dict[str, Any]]:
    """The shapes of a graded row, distractors first (the answer's shape is drawn last, on top),
    and its factors: scale, contrast, distractors, the fill the shape was drawn in, every shape."""
    height, width = image.shape[:2]
    scale = GRADED_SCALES[rng.integers(len(GRADED_SCALES))]
    contrast = GRADED_CONTRASTS[rng.integers(len(GRADED_CONTRASTS))]
    count = GRADED_DISTRACTORS[rng.integers(len(GRADED_DISTRACTORS))]
    radius = max(3, round(shape.radius * scale))
    top, left = max(0, shape.row - radius), max(0, shape.col - radius)
    local = image[top:shape.row + radius + 1, left:shape.col + radius + 1].reshape(-1, 3).mean(axis=0)
    fill = tuple(int(round(b + contrast * (c - b))) for b, c in zip(local, COLOURS[shape.colour]))
    main = dataclasses.replace(shape, radius=radius, fill=fill)
    small, others = max(4, radius // 2), [c for c in COLOURS if c != shape.colour]  # 4: more than its outline
    distractors: list[Shape] = []
    for _ in range(100 * count):  # rejection sampling: clear of the shape and of each other
        if len(distractors) == count:
            break
        row, col = int(rng.integers(small, height - small)), int(rng.integers(small, width - small))
        if all((row - s.row) ** 2 + (col - s.col) ** 2 >= (s.radius + small + 2) ** 2 for s in [main, *distractors]):
            distractors.append(Shape(KINDS[rng.integers(len(KINDS))], others[rng.integers(len(others))], row, col,
                                     small))
    shapes = [*distractors, main]
    factors = {"scale": scale, "contrast": contrast, "distractors": len(distractors), "fill": list(fill),
               "shapes": [dataclasses.asdict(s) for s in shapes]}
    return shapes, factors


def rgbd_scene(rng: np.random.Generator, size: tuple[int, int] = (240, 320),
               num_boxes: int = 8, hole: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 frame and its depth in metres (float32, 0 = no measurement).

    A wall at 9 m above the horizon, a floor receding from 1 m (bottom row) to
    9 m (horizon), and boxes at random depths in [0.5, 8] m drawn far to near.
    With `hole`, one small patch has no depth, like a sensor dropout.
    """
    height, width = size
    horizon = height // 2
    depth = np.full(size, 9.0, dtype=np.float32)
    rows = np.arange(horizon, height)
    depth[horizon:] = (9.0 + (1.0 - 9.0) * (rows - horizon) / max(1, height - 1 - horizon))[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:horizon] = (170, 170, 180)
    shade = (200 - 120 * (depth[horizon:] - 1.0) / 8.0).astype(np.uint8)
    rgb[horizon:] = np.stack([shade, (shade * 0.8).astype(np.uint8), (shade * 0.6).astype(np.uint8)], -1)
    boxes = []
    for _ in range(num_boxes):
        box_h = int(rng.integers(height // 8, height // 3))
        box_w = int(rng.integers(width // 10, width // 4))
        boxes.append((float(rng.uniform(0.5, 8.0)), int(rng.integers(0, height - box_h)),
                      int(rng.integers(0, width - box_w)), box_h, box_w))
    for box_depth, top, left, box_h, box_w in sorted(boxes, reverse=True):
        depth[top:top + box_h, left:left + box_w] = box_depth
        colour = rng.integers(30, 256, size=3).astype(np.uint8)
        rgb[top:top + box_h, left:left + box_w] = colour
    if hole:
        top, left = int(rng.integers(0, height - 10)), int(rng.integers(0, width - 10))
        depth[top:top + 10, left:left + 10] = 0.0
    return rgb, depth


class SyntheticRgbdSource:
    """Random-access source of synthetic RGB-D rows (`images=[rgb]`, `depth`)."""

    def __init__(self, num_samples: int, seed: int = 0, size: tuple[int, int] = (240, 320)):
        self.num_samples, self.seed, self.size = num_samples, seed, tuple(size)

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:  # what an error naming the data shows
        return f"SyntheticRgbdSource({self.num_samples} rows, seed={self.seed})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        rgb, depth = rgbd_scene(record_rng(self.seed, 0, index), self.size)
        return {"id": f"rgbd-{index}", "where": f"SyntheticRgbdSource(seed={self.seed})[{index}]",
                "images": [rgb], "videos": [], "messages": None, "prompt": None, "solution": None,
                "task": None, "extra": {}, "depth": depth}


def write_rgbd_scenes(directory: str | os.PathLike, num_samples: int, seed: int = 0,
                      size: tuple[int, int] = (240, 320), depth_format: str = "png") -> str:
    """Writes scenes as rgb PNG + depth (16-bit mm PNG or .npy metres); returns the index JSONL."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    index_path = os.path.join(directory, "index.jsonl")
    with open(index_path, "w") as index:
        for i in range(num_samples):
            rgb, depth = rgbd_scene(record_rng(seed, 0, i), size)
            Image.fromarray(rgb).save(os.path.join(directory, f"{i:05d}_rgb.png"))
            if depth_format == "png":
                depth_name = f"{i:05d}_depth.png"
                images_lib.save_depth_png(os.path.join(directory, depth_name), depth)
            elif depth_format == "npy":
                depth_name = f"{i:05d}_depth.npy"
                np.save(os.path.join(directory, depth_name), depth)
            else:
                raise ValueError(f"depth_format must be 'png' or 'npy', got {depth_format!r}")
            index.write(json.dumps({"image": f"{i:05d}_rgb.png", "depth": depth_name}) + "\n")
    return index_path


def moving_shapes_video(seconds: float, fps: float, size: tuple[int, int] = (64, 64),
                        seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3): background red level rises 20..220 with time; a square moves."""
    num_frames = int(round(seconds * fps))
    height, width = size
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 256, size=3).astype(np.uint8)
    frames = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(size) // 5)
    for t in range(num_frames):
        progress = t / max(1, num_frames - 1)
        frames[t, :, :, 0] = int(round(20 + 200 * progress))
        frames[t, :, :, 2] = 60
        col = int(round(progress * (width - side)))
        top = (height - side) // 2
        frames[t, top:top + side, col:col + side] = colour
    return frames


def write_moving_shapes_video(path: str | os.PathLike, seconds: float, fps: float,
                              size: tuple[int, int] = (64, 64), seed: int = 0) -> str:
    video_lib.write_video(path, moving_shapes_video(seconds, fps, size, seed), fps)
    return os.fspath(path)
