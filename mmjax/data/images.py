"""Decoding images and depth maps into numpy arrays."""

from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps

ImageInput = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def decode_image(image: ImageInput) -> np.ndarray:
    """Returns an RGB uint8 array (H, W, 3).

    Accepts a path, encoded bytes, a PIL image or an array. EXIF orientation is
    applied, as transformers' `load_image` does. Raises FileNotFoundError for a
    missing file and OSError/ValueError for unreadable or truncated data.
    """
    if isinstance(image, np.ndarray):
        return _as_rgb_array(image)
    if isinstance(image, Image.Image):
        pil = image
    else:
        data = image if isinstance(image, bytes) else _read_bytes(image)
        pil = Image.open(io.BytesIO(data))
        pil.load()  # Decode now so corrupt or truncated files fail here, not later.
    pil = ImageOps.exif_transpose(pil)
    return np.asarray(pil.convert("RGB"))


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _as_rgb_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 3:
        return array
    if array.ndim == 3 and array.shape[2] == 4:
        return array[:, :, :3]
    raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")


def load_depth(path: str | os.PathLike) -> np.ndarray:
    """Returns depth in metres as float32 (H, W); 0 marks a missing measurement.

    `.npy` files hold metres; image files (16-bit PNG) hold millimetres, the
    convention of NYU-v2, ScanNet and most RGB-D sensors.
    """
    path = os.fspath(path)
    if path.endswith(".npy"):
        depth = np.load(path, allow_pickle=False)
        if depth.ndim != 2:
            raise ValueError(f"depth array must be (H, W), got {depth.shape} in {path}")
        depth = depth.astype(np.float32)
    else:
        with Image.open(path) as pil:
            pil.load()
            raw = np.asarray(pil)
        if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
            raise ValueError(
                f"depth image must be single-channel 16-bit millimetres, got {raw.dtype} {raw.shape}"
                f" in {path}")
        depth = raw.astype(np.float32) / 1000.0
    depth[~np.isfinite(depth)] = 0.0
    return depth


def save_depth_png(path: str | os.PathLike, depth_m: np.ndarray) -> None:
    """Writes metres as a 16-bit PNG in millimetres (clipped to 65.535 m)."""
    mm = np.clip(np.round(depth_m * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(os.fspath(path), format="PNG")
