"""Qwen2-VL / Qwen2.5-VL image preprocessing in numpy + PIL.

Matches transformers 5.24's `Qwen2VLImageProcessorPil` (the PIL/numpy backend) value
for value: PIL bicubic resize of the uint8 image to a `smart_resize` size, rescale in
float64 then cast to float32, normalise in float32, and the same patch flatten order.

Public API:
    ImageProcessorConfig            the HF `preprocessor_config.json` fields we use
    smart_resize(height, width, factor, min_pixels, max_pixels) -> (height, width)
    to_rgb_array(image, index) -> uint8 [H, W, 3]
    resize_normalize(image, height, width, cfg) -> float32 [H', W', 3]
    preprocess_images(images, cfg) -> {"pixel_values": float32 [N, C*T*P*P],
                                       "image_grid_thw": int64 [n_images, 3]}

The patch row layout is (C, T, P, P) flattened, rows ordered by merge blocks:
(grid_h/m, grid_w/m, m, m). This is what Qwen2.5-VL's vision tower expects.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image

# OpenAI CLIP statistics, as in transformers.image_utils.OPENAI_CLIP_MEAN / _STD.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200

ImageLike = PIL.Image.Image | np.ndarray


@dataclasses.dataclass(frozen=True)
class ImageProcessorConfig:
    """Fields of a Qwen2-VL `preprocessor_config.json` (defaults = transformers' defaults)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = int(PIL.Image.Resampling.BICUBIC)
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    def __post_init__(self):
        for name in ("patch_size", "temporal_patch_size", "merge_size", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ImageProcessorConfig.{name} must be a positive int, got {value!r}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(
                f"ImageProcessorConfig.min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})"
            )
        for name in ("image_mean", "image_std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"ImageProcessorConfig.{name} needs 3 values (RGB), got {value}")
            object.__setattr__(self, name, value)

    @property
    def factor(self) -> int:
        """Side lengths are rounded to multiples of this (one merged patch)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Length of one row of `pixel_values`: 3 * T * P * P."""
        return 3 * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageProcessorConfig":
        """Reads HF fields; top-level min_pixels/max_pixels override `size`, as in transformers."""
        size = dict(d.get("size") or {})

        def first(*values):
            return next(v for v in values if v is not None)

        min_pixels = first(d.get("min_pixels"), size.get("shortest_edge"), size.get("min_pixels"), cls.min_pixels)
        max_pixels = first(d.get("max_pixels"), size.get("longest_edge"), size.get("max_pixels"), cls.max_pixels)
        kwargs: dict[str, Any] = {"min_pixels": int(min_pixels), "max_pixels": int(max_pixels)}
        for field in dataclasses.fields(cls):
            if field.name in d and field.name not in kwargs:
                kwargs[field.name] = d[field.name]
        if "resample" in kwargs:
            kwargs["resample"] = int(kwargs["resample"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """HF `preprocessor_config.json` content (both the old and the new size fields)."""
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
            "do_convert_rgb": True,
            "do_resize": self.do_resize,
            "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        }

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "ImageProcessorConfig":
        path = os.path.join(directory, "preprocessor_config.json")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "preprocessor_config.json")
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        return path


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area in [min_pixels, max_pixels].

    Same arithmetic as transformers (Python's round-half-even, floor when shrinking,
    ceil when growing), so token counts agree with HF to the token.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got height={height}, width={width}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"image of height {height} and width {width} has aspect ratio {ratio:.1f}; Qwen2-VL "
            f"resizing supports at most {MAX_ASPECT_RATIO} (crop or pad the image first)"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb_array(image: ImageLike, index: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]; PIL images with alpha are composited on white, as transformers does."""
    if isinstance(image, PIL.Image.Image):
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = PIL.Image.alpha_composite(white, rgba)
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image {index}: expected a PIL image or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected dtype uint8, got {image.dtype} (shape {image.shape})")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image {index}: expected shape [H, W, 3] (RGB, channels last), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return image


def resize_normalize(image: np.ndarray, height: int, width: int, cfg: ImageProcessorConfig) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [height, width, 3], in transformers' order of operations."""
    if cfg.do_resize:
        # PIL resizes the uint8 image; transformers' PIL backend does the same.
        image = np.asarray(
            PIL.Image.fromarray(image).resize((width, height), resample=PIL.Image.Resampling(cfg.resample))
        )
    out = image.astype(np.float32)
    if cfg.do_rescale:
        out = (image.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    if cfg.do_normalize:
        mean = np.asarray(cfg.image_mean, dtype=np.float32)
        std = np.asarray(cfg.image_std, dtype=np.float32)
        out = (out - mean) / std
    return out


def patchify(frames: np.ndarray, cfg: ImageProcessorConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
    """float [F, H, W, 3] with F % temporal_patch_size == 0 -> ([gt*gh*gw, C*T*P*P], (gt, gh, gw))."""
    num_frames, height, width, channels = frames.shape
    p, m, t = cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size
    if num_frames % t or height % (p * m) or width % (p * m):
        raise ValueError(
            f"patchify needs frames % {t} == 0 and height, width multiples of {p * m}; got {frames.shape}"
        )
    gt, gh, gw = num_frames // t, height // p, width // p
    x = frames.reshape(gt, t, gh // m, m, p, gw // m, m, p, channels)
    # -> (gt, gh/m, gw/m, m_h, m_w, C, T, P_h, P_w), transformers' flatten order.
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return x.reshape(gt * gh * gw, channels * t * p * p), (gt, gh, gw)


def preprocess_images(images: Sequence[ImageLike], cfg: ImageProcessorConfig | None = None) -> dict[str, np.ndarray]:
    """Resize, normalise and patchify images of any sizes.

    Returns pixel_values float32 [sum of grid_h*grid_w, 3*T*P*P] and image_grid_thw int64
    [n, 3] (t = 1: a still image is repeated T times along time, like transformers).
    """
    cfg = cfg or ImageProcessorConfig()
    if isinstance(images, (np.ndarray, PIL.Image.Image)):
        raise ValueError("preprocess_images takes a list of images; wrap a single image in a list")
    patches, grids = [], []
    for index, image in enumerate(images):
        rgb = to_rgb_array(image, index)
        height, width = rgb.shape[:2]
        if cfg.do_resize:
            height, width = smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
        pixels = resize_normalize(rgb, height, width, cfg)
        frames = np.broadcast_to(pixels[None], (cfg.temporal_patch_size, *pixels.shape))
        flat, (_, gh, gw) = patchify(frames, cfg)
        patches.append(flat)
        grids.append((1, gh, gw))
    pixel_values = (
        np.concatenate(patches, axis=0) if patches else np.zeros((0, cfg.patch_dim), dtype=np.float32)
    )
    return {
        "pixel_values": pixel_values.astype(np.float32, copy=False),
        "image_grid_thw": np.asarray(grids, dtype=np.int64).reshape(-1, 3),
    }
