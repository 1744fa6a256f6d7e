"""Decoding images and depth maps into numpy arrays."""

from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps

ImageInput = Union[str, os.PathLike, bytes, np.ndarray, Image.Image]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageTooLarge(ValueError):
    """An image over PIL's decompression-bomb limit; the message gives its size and the limit.

    A ValueError, so every caller that reports unreadable images reports this one the same
    way (with its file:line and name), instead of PIL's DecompressionBombError, an Exception
    that no such handler catches.
    """


def decode_image(image: ImageInput) -> np.ndarray:
    """Returns an RGB uint8 array (H, W, 3).

    Accepts a path, encoded bytes, a PIL image or an array. EXIF orientation is
    applied, as transformers' `load_image` does. Raises FileNotFoundError for a
    missing file, ImageTooLarge (a ValueError) for one over PIL's pixel limit and
    OSError/ValueError for unreadable or truncated data.

    PIL's limit has two steps: over 2 x Image.MAX_IMAGE_PIXELS it refuses
    (DecompressionBombError), between 1x and 2x it only warns. We follow PIL: the
    first is ImageTooLarge, the second is decoded (callers that know the image's
    name may say so, see `rows.normalize_row`), so raising PIL's own limit lets
    such images through with no setting of ours. Where warnings are made errors
    (python -W error), PIL raises the warning instead; that is ImageTooLarge too.
    """
    if isinstance(image, np.ndarray):
        return _as_rgb_array(image)
    if isinstance(image, Image.Image):
        pil = image
    else:
        data = image if isinstance(image, bytes) else _read_bytes(image)
        try:
            pil = Image.open(io.BytesIO(data))
            pil.load()  # Decode now so corrupt or truncated files fail here, not later.
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLarge(_too_large(data, e)) from None
    pil = ImageOps.exif_transpose(pil)
    return np.asarray(pil.convert("RGB"))


def over_pixel_limit(width: int, height: int) -> bool:
    """Whether PIL warns about (or refuses) an image this size: more than Image.MAX_IMAGE_PIXELS pixels."""
    limit = Image.MAX_IMAGE_PIXELS  # read per call: users and tests change PIL's global
    return limit is not None and width * height > limit


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header, read past PIL's size check; None if no plugin reads it.

    Image.open raises before it returns the image, so its size is not in the error; the
    format plugins' own constructors parse the header without the check (what Image.open
    calls before checking). Only the header is read: no pixel is decoded.
    """
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN.get(name, (None, None))
        if factory is None:
            continue
        try:
            accepted = not accept or accept(prefix)
            if accepted and not isinstance(accepted, str):  # a str is PIL's reason to refuse
                return tuple(factory(io.BytesIO(data), "").size)
        except Exception:  # pylint: disable=broad-except  # not this format, or a bomb check of its own
            continue
    return None


def _too_large(data: bytes, error: BaseException) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    size = _declared_size(data)
    if size is None or limit is None:
        return f"too large to decode: {error}"
    width, height = size
    pixels = width * height
    if pixels > 2 * limit:
        over = f"> PIL's limit of {2 * limit} (2 x PIL.Image.MAX_IMAGE_PIXELS)"
    else:
        over = f"> PIL.Image.MAX_IMAGE_PIXELS = {limit} (PIL's warning, made an error by the warning filters)"
    return (f"too large to decode ({width} x {height} = {pixels} pixels {over}: PIL's decompression bomb "
            f"guard); downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted")


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
