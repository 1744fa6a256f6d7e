"""A transform that decodes a row's video paths into sampled frames (for QA rows)."""

from __future__ import annotations

import dataclasses
from typing import Any

import av
import grain
import numpy as np

from mmjax.data import video as video_lib
from mmjax.data.skips import Skipped, skip_or_raise


@dataclasses.dataclass(frozen=True)
class DecodeVideos(grain.transforms.Map):
    """row["videos"] paths -> uint8 (T, H, W, 3) arrays at about `fps`, plus row["video_fps"]."""

    fps: float = 2.0
    max_frames: int | None = 768
    strict: bool = False

    def map(self, element: Any) -> Any:
        if isinstance(element, Skipped):
            return element
        frames, rates = [], []
        for path in element.get("videos", ()):
            if isinstance(path, np.ndarray):
                raise ValueError(f"{element.get('where')}: videos are already decoded")
            where = f"{element.get('where', '?')} ({path})"
            try:
                clip, rate = video_lib.read_video_at_fps(path, self.fps, max_frames=self.max_frames)
            except FileNotFoundError:
                return skip_or_raise(self.strict, "video_missing", where, "no such file")
            except (OSError, ValueError, av.error.FFmpegError) as e:
                return skip_or_raise(self.strict, "video_unreadable", where, f"{type(e).__name__}: {e}")
            frames.append(clip)
            rates.append(rate)
        return {**element, "videos": frames, "video_fps": rates}
