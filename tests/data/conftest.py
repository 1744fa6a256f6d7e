"""Fixtures for the data tests: small real images, videos and datasets in temp dirs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from mmjax.data import synthetic


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo with an odd size (300 x 451), so tiles do not divide evenly."""
    return skimage.data.chelsea()


def write_jsonl(path: str, rows: list) -> str:
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture()
def image_dir(tmp_path) -> str:
    """data root with three good PNG/JPEG images, a corrupt one and a truncated one."""
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    Image.fromarray(skimage.data.astronaut()[::4, ::4]).save(root / "imgs" / "astronaut.png")
    Image.fromarray(skimage.data.coffee()[::4, ::4]).save(root / "imgs" / "coffee.png")
    Image.fromarray(skimage.data.chelsea()[::3, ::3]).save(root / "imgs" / "chelsea.jpg", quality=95)
    (root / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    good = (root / "imgs" / "coffee.png").read_bytes()
    (root / "imgs" / "truncated.png").write_bytes(good[: len(good) // 2])
    return str(root)


@pytest.fixture(scope="session")
def long_video(tmp_path_factory) -> str:
    """30 s at 4 fps (120 frames), 64 x 64, moving square, red level rising with time."""
    path = tmp_path_factory.mktemp("videos") / "long.mp4"
    return synthetic.write_moving_shapes_video(path, seconds=30, fps=4, size=(64, 64))


@pytest.fixture(scope="session")
def short_video(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("videos") / "short.mp4"
    return synthetic.write_moving_shapes_video(path, seconds=10, fps=4, size=(64, 64))


@pytest.fixture()
def keyed():
    """Adds the pipeline's (epoch, index) key to a row."""

    def add_key(row: dict, epoch: int = 0, index: int = 0) -> dict:
        return {**row, "epoch": epoch, "index": index}

    return add_key
