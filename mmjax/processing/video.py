"""Qwen2-VL / Qwen2.5-VL video preprocessing for already-sampled frames (numpy + PIL).

Follows transformers 5.24's `Qwen2VLVideoProcessor` (+ `Qwen2_5_VLProcessor` for
`second_per_grid_ts`) with one deliberate difference: transformers resizes and
normalises videos with torchvision, which is not a dependency here; each frame goes
through the PIL path of the image processor instead (`image.resize_normalize`). Shapes,
grids, frame padding and patch order are transformers'; pixel values agree with
transformers' image processor applied frame by frame, and differ from torchvision's
antialiased bicubic by small interpolation differences.

Public API:
    DEFAULT_VIDEO_FPS = 24.0  (transformers' fallback when a video has no fps metadata)
    video_resize_size(num_frames, height, width, cfg, ...) -> (height, width)
    preprocess_video(frames [F, H, W, 3] uint8, cfg, fps=None, ...)
        -> (pixel_values_videos float32 [gt*gh*gw, 3*T*P*P], video_grid_thw int64 [1, 3],
            second_per_grid_ts float32 [1])
    preprocess_videos(videos, cfg, fps=None, ...) -> {"pixel_values_videos", "video_grid_thw",
                                                     "second_per_grid_ts"}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmjax.processing.image import ImageProcessorConfig, patchify, resize_normalize, smart_resize

DEFAULT_VIDEO_FPS = 24.0
DEFAULT_MAX_VIDEO_TOKENS = 128000


def _check_frames(frames: np.ndarray, index: int) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"video {index}: expected a numpy array [F, H, W, 3], got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"video {index}: expected dtype uint8, got {frames.dtype} (shape {frames.shape})")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"video {index}: expected shape [F, H, W, 3] (RGB, channels last), got {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"video {index}: empty video of shape {frames.shape}")


def video_resize_size(
    num_frames: int,
    height: int,
    width: int,
    cfg: ImageProcessorConfig,
    *,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = DEFAULT_MAX_VIDEO_TOKENS,
) -> tuple[int, int]:
    """Frame size after resizing; `cap_pixels_per_frame` shares a total pixel budget over frames.

    The cap is transformers' `cap_pixels_per_frame=True` (qwen-vl-utils' behaviour); off by
    default, as in transformers 5.24.
    """
    max_pixels = cfg.max_pixels
    if cap_pixels_per_frame:
        total_pixels = int(max_video_tokens * cfg.factor * cfg.factor * 0.9)
        max_pixels = max(
            min(max_pixels, total_pixels * cfg.temporal_patch_size // num_frames), int(cfg.min_pixels * 1.05)
        )
    return smart_resize(height, width, cfg.factor, cfg.min_pixels, max_pixels)


def preprocess_video(
    frames: np.ndarray,
    cfg: ImageProcessorConfig | None = None,
    fps: float | None = None,
    *,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = DEFAULT_MAX_VIDEO_TOKENS,
    index: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One video of sampled frames -> (pixel_values_videos, video_grid_thw [1, 3], second_per_grid_ts [1]).

    `fps` is the rate of the *sampled* frames; None means 24 (transformers' fallback).
    An odd frame count is padded by repeating the last frame up to a multiple of
    temporal_patch_size, as transformers does.
    """
    cfg = cfg or ImageProcessorConfig()
    _check_frames(frames, index)
    if fps is not None and not fps > 0:
        raise ValueError(f"video {index}: fps must be positive, got {fps}")
    num_frames, height, width, _ = frames.shape
    if cfg.do_resize:
        height, width = video_resize_size(
            num_frames,
            height,
            width,
            cfg,
            cap_pixels_per_frame=cap_pixels_per_frame,
            max_video_tokens=max_video_tokens,
        )
    processed = np.stack([resize_normalize(frame, height, width, cfg) for frame in frames])
    pad = -num_frames % cfg.temporal_patch_size
    if pad:
        processed = np.concatenate([processed, np.repeat(processed[-1:], pad, axis=0)])
    pixel_values, grid = patchify(processed, cfg)
    fps = DEFAULT_VIDEO_FPS if fps is None else float(fps)
    second_per_grid_ts = np.asarray([cfg.temporal_patch_size / fps], dtype=np.float32)
    return pixel_values.astype(np.float32, copy=False), np.asarray([grid], dtype=np.int64), second_per_grid_ts


def preprocess_videos(
    videos: Sequence[np.ndarray],
    cfg: ImageProcessorConfig | None = None,
    fps: float | Sequence[float | None] | None = None,
    *,
    cap_pixels_per_frame: bool = False,
    max_video_tokens: int = DEFAULT_MAX_VIDEO_TOKENS,
) -> dict[str, np.ndarray]:
    """Several videos -> concatenated pixel_values_videos, video_grid_thw [n, 3], second_per_grid_ts [n]."""
    cfg = cfg or ImageProcessorConfig()
    if isinstance(videos, np.ndarray):
        raise ValueError("preprocess_videos takes a list of [F, H, W, 3] arrays; wrap a single video in a list")
    fps_list = list(fps) if isinstance(fps, Sequence) else [fps] * len(videos)
    if len(fps_list) != len(videos):
        raise ValueError(f"got {len(videos)} videos but {len(fps_list)} fps values")
    outputs = [
        preprocess_video(
            frames,
            cfg,
            rate,
            cap_pixels_per_frame=cap_pixels_per_frame,
            max_video_tokens=max_video_tokens,
            index=index,
        )
        for index, (frames, rate) in enumerate(zip(videos, fps_list))
    ]
    if not outputs:
        return {
            "pixel_values_videos": np.zeros((0, cfg.patch_dim), dtype=np.float32),
            "video_grid_thw": np.zeros((0, 3), dtype=np.int64),
            "second_per_grid_ts": np.zeros((0,), dtype=np.float32),
        }
    return {
        "pixel_values_videos": np.concatenate([o[0] for o in outputs]),
        "video_grid_thw": np.concatenate([o[1] for o in outputs]),
        "second_per_grid_ts": np.concatenate([o[2] for o in outputs]),
    }
