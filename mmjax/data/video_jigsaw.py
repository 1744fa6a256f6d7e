"""Video jigsaw (SPEC 1.2): K trimmed temporal clips shown as separate videos, shuffled."""

from __future__ import annotations

import dataclasses
import fractions
from typing import Any

import av
import numpy as np
from PIL import Image

from mmjax.data import prompts
from mmjax.data import video as video_lib
from mmjax.data.jigsaw import format_order, shuffle_pieces
from mmjax.data.skips import Skipped
from mmjax.data.tasks import TaskTransform, make_sample
from mmjax.processing.image import smart_resize

TRIM_RELEASED_CODE = 0.10  # per end of each segment (default)
TRIM_PAPER = 0.05
FRAME_PIXELS = 128 * 28 * 28


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """Frame indices of each clip (chronological) and the rate they sample at."""

    indices: list[np.ndarray]
    sampled_fps: list[float]


def plan_clips(num_frames: int, fps: float, num_clips: int = 6, trim: float = TRIM_RELEASED_CODE,
               sample_fps: float = 2.0, min_frames: int = 2, max_frames: int = 12) -> ClipPlan:
    """Splits a video into `num_clips` equal segments, trims and samples each.

    Each segment has num_frames // num_clips frames (the remainder is dropped at
    the start, as in the released code). floor(trim * segment) frames are cut
    from both ends; from what is left, n = duration * sample_fps frames are taken,
    n clamped to [min_frames, max_frames] (and to the frames available), then
    rounded down to even; frames are evenly spaced from first to last.
    Raises ValueError when a trimmed segment has fewer than `min_frames` frames.
    """
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    if min_frames < 2 or min_frames % 2 or max_frames < min_frames:
        raise ValueError(f"need even min_frames >= 2 and max_frames >= min_frames, got"
                         f" {min_frames}, {max_frames}")
    segment = num_frames // num_clips
    # Exact rational arithmetic: 0.1 * 50 must cut 5 frames, not 4.
    ratio = fractions.Fraction(trim).limit_denominator(1000)
    cut = segment * ratio.numerator // ratio.denominator
    kept = segment - 2 * cut
    if kept < min_frames:
        raise ValueError(f"{num_frames} frames in {num_clips} clips leave {kept} frames per trimmed"
                         f" clip, fewer than {min_frames}")
    count = video_lib.frame_count(kept, fps, sample_fps, min_frames, max_frames)
    offsets = np.round(np.linspace(0, kept - 1, count)).astype(np.int64)
    first = num_frames - segment * num_clips
    indices = [first + i * segment + cut + offsets for i in range(num_clips)]
    return ClipPlan(indices=indices, sampled_fps=[count / kept * fps] * num_clips)


def resize_frames(frames: np.ndarray, pixels: int, factor: int = 28) -> np.ndarray:
    """Bicubic resize of (T, H, W, 3) frames to a multiple-of-`factor` size of ~`pixels` area."""
    height, width = smart_resize(frames.shape[1], frames.shape[2], factor, pixels, pixels)
    if (height, width) == frames.shape[1:3]:
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
                     for f in frames])


@dataclasses.dataclass(frozen=True)
class VideoJigsaw(TaskTransform):
    """SPEC 1.2 on rows with one video path; videos under `min_seconds` are skipped."""

    num_clips: int = 6
    trim: float = TRIM_RELEASED_CODE
    sample_fps: float = 2.0
    min_frames: int = 2
    max_frames: int = 12
    min_seconds: float = 24.0
    frame_pixels: int = FRAME_PIXELS

    def apply(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | Skipped:
        if len(row.get("videos", ())) != 1:
            return self.skip(row, "jigsaw_needs_one_video", f"got {len(row.get('videos', ()))} videos")
        path = row["videos"][0]
        try:
            info = video_lib.probe_video(path)
        except FileNotFoundError:
            return self.skip(row, "video_missing", f"no such file {path}")
        except (OSError, ValueError, av.error.FFmpegError) as e:
            return self.skip(row, "video_unreadable", f"{path}: {type(e).__name__}: {e}")
        if info.duration < self.min_seconds:
            return self.skip(row, "video_too_short",
                             f"{path} lasts {info.duration:.1f} s < {self.min_seconds} s")
        try:
            plan = plan_clips(info.num_frames, info.fps, self.num_clips, self.trim, self.sample_fps,
                              self.min_frames, self.max_frames)
        except ValueError as e:
            return self.skip(row, "video_too_short", f"{path}: {e}")
        try:
            frames = video_lib.read_frames(path, np.concatenate(plan.indices))
        except (OSError, ValueError, av.error.FFmpegError) as e:
            return self.skip(row, "video_unreadable", f"{path}: {type(e).__name__}: {e}")
        frames = resize_frames(frames, self.frame_pixels)
        clips = np.split(frames, np.cumsum([len(i) for i in plan.indices])[:-1])
        order, target = shuffle_pieces(self.num_clips, rng)
        content = prompts.video_jigsaw_content(self.num_clips, self.container)
        return make_sample(row, task="jigsaw_video", messages=[prompts.user_message(content)],
                           videos=[clips[j] for j in order],
                           video_fps=[plan.sampled_fps[j] for j in order],
                           solution=format_order(target), container=self.container)
