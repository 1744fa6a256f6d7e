"""Small benchmark files in the real formats of `mmjax.eval.benchmarks`, made from synthetic data.

What `configs/eval.py:tiny` evaluates (a benchmark path of "synthetic", mmjax.jobs.build), so the
eval job runs as written on a laptop with nothing downloaded. The formats (`FORMATS`):

    mmstar  a question about coloured shapes drawn on a bundled photo (`mmjax.data.synthetic`):
            the colour of the one shape of a kind, or how many shapes have a colour; four
            options "A: ..., B: ..." in the question text as MMStar writes them, the answer
            their letter. Each row also keeps `shapes` (kind, colour, centre row / col, radius):
            the answer follows from them, and they from the image.
    qa      a held-out graded colour-choice row (`synthetic.ColourChoiceSource(graded=True)`) in the
            training rows' layout: "<image>" + the question with its options, the solution letter,
            task "choice", its difficulty factors as groups (scale, contrast, distractors), so
            results.md breaks the score down by each. What the paradigm demo evaluates.
    jigsaw  a zoomed crop of a bundled photo (`synthetic.photo`); `category` names the photo,
            `crop` = [top, left, side] the square cut from it before the resize. The jigsaw's
            grid and permutation are the reader's (ReadOptions), as for any jigsaw file.

A benchmark is `<format>.jsonl` plus `images/<index>.png` in one folder, image paths relative to
it. Every row is a pure function of (seed, index): the same arguments write the same bytes.
`cached_benchmark` writes each (format, rows, seed) once under the temp dir and reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from mmjax.data import synthetic
from mmjax.data.rng import record_rng

IMAGE_SIZE = (168, 168)  # (height, width): 6 x 28 px patches, so jigsaw grids up to 6x6 fit (SPEC 1.1)
SHAPES_PER_IMAGE = (2, 5)
OPTION_LETTERS = "ABCD"
# record_rng streams of the generators, apart from the tasks' stream 0 (the jigsaw's permutation).
_STREAMS = {"mmstar": 101, "jigsaw": 102}
# qa rows: ColourChoiceSource(graded) at configs/demo.py's image size, so a model trained on the
# graded rows is evaluated on what it trained on; seed + 1000 as recipe.DemoEval's held-out split,
# so a training source at a small data.seed never draws these rows.
QA_IMAGE_SIZE = (56, 56)
QA_SEED_OFFSET = 1000
# Part of the cache folder's name: bump it when a generator changes what it writes.
VERSION = 1


def _options_question(question: str, options: list[str]) -> str:
    """MMStar's layout: the question, then "Options: A: x, B: y, C: z, D: w"."""
    return question + "\nOptions: " + ", ".join(f"{OPTION_LETTERS[i]}: {o}" for i, o in enumerate(options))


def mmstar_row(seed: int, index: int) -> tuple[dict[str, Any], np.ndarray]:
    """(row without its image path, image) of synthetic MMStar row `index`."""
    rng = record_rng(seed, 0, index, _STREAMS["mmstar"])
    image = synthetic.background(rng, IMAGE_SIZE, "photos")
    low, high = SHAPES_PER_IMAGE
    shapes = synthetic.place_shapes(rng, IMAGE_SIZE, int(rng.integers(low, high + 1)))
    unique = [s for s in shapes if sum(t.kind == s.kind for t in shapes) == 1]
    colours = list(synthetic.COLOURS)
    if unique and rng.integers(2) == 0:
        target = unique[int(rng.integers(len(unique)))]
        question = f"What colour is the {target.kind} in the image?"
        options = [colours[i] for i in rng.permutation(len(colours))]
        answer, l2 = target.colour, "colour"
    else:
        colour = colours[int(rng.integers(len(colours)))]
        count = sum(s.colour == colour for s in shapes)
        others = [n for n in range(high + 2) if n != count]  # 0 .. one past the most shapes drawn
        values = [count] + [others[i] for i in rng.choice(len(others), len(OPTION_LETTERS) - 1, replace=False)]
        question = f"How many {colour} shapes are there in the image?"
        options = [str(values[i]) for i in rng.permutation(len(values))]  # the answer at any letter
        answer, l2 = str(count), "counting"
    row = {"index": index, "question": _options_question(question, options),
           "answer": OPTION_LETTERS[options.index(answer)], "category": "synthetic shapes", "l2_category": l2,
           "shapes": [{"kind": s.kind, "colour": s.colour, "row": s.row, "col": s.col, "radius": s.radius}
                      for s in shapes]}
    return row, synthetic.draw_shapes(image, shapes)


def jigsaw_row(seed: int, index: int) -> tuple[dict[str, Any], np.ndarray]:
    """(row without its image path, image) of synthetic jigsaw row `index`: a zoomed photo crop."""
    rng = record_rng(seed, 0, index, _STREAMS["jigsaw"])
    name = synthetic.PHOTOS[int(rng.integers(len(synthetic.PHOTOS)))]
    photo = synthetic.photo(name)
    short = min(photo.shape[:2])
    side = int(rng.integers(short // 2, short + 1))
    top = int(rng.integers(photo.shape[0] - side + 1))
    left = int(rng.integers(photo.shape[1] - side + 1))
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    image = np.asarray(crop.resize(IMAGE_SIZE[::-1], Image.Resampling.BILINEAR))
    return {"id": f"synthetic-jigsaw-{index}", "category": name, "crop": [top, left, side]}, image


def qa_row(seed: int, index: int) -> tuple[dict[str, Any], np.ndarray]:
    """(row without its images, image) of synthetic qa row `index`: a graded colour-choice row, held out."""
    source = synthetic.ColourChoiceSource(index + 1, seed=seed + QA_SEED_OFFSET, size=QA_IMAGE_SIZE, graded=True)
    row = source[index]
    factors = {k: row["extra"][k] for k in ("scale", "contrast", "distractors")}
    return ({"id": row["id"], "prompt": row["prompt"], "solution": row["solution"], "task": row["task"],
             "category": "graded colour choice", "groups": factors}, row["images"][0])


ROWS: dict[str, Callable[[int, int], tuple[dict[str, Any], np.ndarray]]] = {
    "mmstar": mmstar_row, "jigsaw": jigsaw_row, "qa": qa_row}
IMAGE_KEYS = {"qa": "images"}  # the field a row's image path goes in (a list there), else "image"
FORMATS = tuple(ROWS)


def _check_format(fmt: str) -> None:
    if fmt not in ROWS:
        raise ValueError(f"no synthetic benchmark of format {fmt!r}; synthetic formats: {list(FORMATS)}")


def write_benchmark(fmt: str, directory: str | os.PathLike, num: int, seed: int = 0) -> str:
    """Writes rows 0..num-1 as `directory/<fmt>.jsonl` + `directory/images/*.png`; returns the JSONL path."""
    _check_format(fmt)
    if num < 1:
        raise ValueError(f"num={num}: a benchmark needs at least one row")
    directory = os.fspath(directory)
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    path = os.path.join(directory, f"{fmt}.jsonl")
    with open(path, "w") as f:
        for i in range(num):
            row, image = ROWS[fmt](seed, i)
            name = f"images/{i:05d}.png"
            Image.fromarray(image).save(os.path.join(directory, name))
            key = IMAGE_KEYS.get(fmt, "image")
            f.write(json.dumps({**row, key: [name] if key == "images" else name}) + "\n")
    return path


def cache_root() -> str:
    return os.path.join(tempfile.gettempdir(), "mmjax_synthetic")


def cached_benchmark(fmt: str, num: int, seed: int = 0, root: str | None = None) -> str:
    """The JSONL of `write_benchmark(fmt, ..., num, seed)`, written once per (format, num, seed)
    under `root` (default: <temp dir>/mmjax_synthetic) and reused. It is built in a temporary
    folder renamed into place, so a half-written one is never read."""
    _check_format(fmt)
    root = root or cache_root()
    folder = os.path.join(root, f"bench_{fmt}_n{num}_seed{seed}_v{VERSION}")
    path = os.path.join(folder, f"{fmt}.jsonl")
    if os.path.isdir(folder):
        return path
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=root, prefix=f".bench_{fmt}_")
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the shared cache from other users
        write_benchmark(fmt, tmp, num, seed)
        os.rename(tmp, folder)  # whole or not at all
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(folder):  # not another process winning the race: a real failure
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
