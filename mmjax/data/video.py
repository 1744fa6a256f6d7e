"""Video files through PyAV: probe, decode chosen frames, write (for synthetic data)."""

from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Sequence

import av
import numpy as np


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size from the container, without decoding.

    Raises FileNotFoundError, or av.error.FFmpegError / ValueError for files that
    are not readable videos.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"{path} has no frame rate")
        fps = float(rate)
        num_frames = stream.frames
        if not num_frames:  # Some containers (webm, some mkv) do not store a frame count.
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                raise ValueError(f"{path} stores neither a frame count nor a duration")
            num_frames = int(round(seconds * fps))
        if num_frames <= 0:
            raise ValueError(f"{path} has no frames")
        return VideoInfo(num_frames=int(num_frames), fps=fps, height=stream.height, width=stream.width)


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decodes the frames at `indices` (display order) as uint8 (T, H, W, 3).

    Decodes sequentially up to the last wanted frame: exact frame indices without
    relying on seek accuracy. Raises ValueError if the stream ends early.
    """
    wanted = np.asarray(indices, dtype=np.int64)
    if wanted.size == 0:
        raise ValueError("no frame indices given")
    if np.any(wanted < 0):
        raise ValueError(f"negative frame index in {wanted.tolist()}")
    last = int(wanted.max())
    frames: dict[int, np.ndarray] = {}
    needed = set(wanted.tolist())
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for position, frame in enumerate(container.decode(stream)):
            if position in needed:
                frames[position] = frame.to_ndarray(format="rgb24")
            if position >= last:
                break
    missing = sorted(needed - frames.keys())
    if missing:
        raise ValueError(f"{path} ended before frame {missing[0]} ({len(frames)} of {len(needed)}"
                         " wanted frames decoded)")
    return np.stack([frames[int(i)] for i in wanted])


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float,
                codec: str = "mpeg4") -> None:
    """Writes uint8 (T, H, W, 3) frames (H, W even) to a video file."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}  # Near-lossless, so tests can compare colours.
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def sample_indices(num_frames: int, native_fps: float, fps: float, min_frames: int = 2,
                   max_frames: int | None = None) -> np.ndarray:
    """Evenly spaced frame indices at about `fps`, as Qwen2.5-VL's video reader samples.

    n = duration * fps, clamped to [min_frames, max_frames] and to the frames that
    exist, rounded down to even (frames pair into temporal patches); the indices
    are round(linspace(0, num_frames - 1, n)).
    """
    count = frame_count(num_frames, native_fps, fps, min_frames, max_frames)
    if count < 2:
        raise ValueError(f"{num_frames} frames are too few to sample 2")
    return np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64)


def frame_count(num_frames: int, native_fps: float, fps: float, min_frames: int = 2,
                max_frames: int | None = None) -> int:
    """duration * fps clamped to [min_frames, max_frames] and to num_frames, rounded down to even."""
    wanted = num_frames / native_fps * fps
    upper = num_frames if max_frames is None else min(max_frames, num_frames)
    count = int(min(max(wanted, min_frames), upper))
    return count - count % 2


def read_video_at_fps(path: str | os.PathLike, fps: float = 2.0, min_frames: int = 2,
                      max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """(frames uint8 (T, H, W, 3), their rate) sampled from a video file at about `fps`."""
    info = probe_video(path)
    indices = sample_indices(info.num_frames, info.fps, fps, min_frames, max_frames)
    return read_frames(path, indices), len(indices) / info.num_frames * info.fps
