"""Video jigsaw (SPEC 1.2): clip plans computed by hand, decoding with PyAV, skips."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.data import decode_videos, synthetic, video, video_jigsaw
from mmjax.data.skips import Skipped
from mmjax import containers


def test_plan_for_30_s_at_10_fps_by_hand():
    # 300 frames / 6 clips = 50 frames; 10% trim = 5 per end -> 40 frames (4 s) -> 8 at 2 fps.
    plan = video_jigsaw.plan_clips(300, 10.0, num_clips=6, trim=0.1)
    # round(linspace(0, 39, 8)) = 0, 5.57, 11.14, 16.71, 22.29, 27.86, 33.43, 39.
    offsets = np.array([0, 6, 11, 17, 22, 28, 33, 39])
    assert len(plan.indices) == 6
    for i, indices in enumerate(plan.indices):
        np.testing.assert_array_equal(indices, 50 * i + 5 + offsets)
    assert plan.sampled_fps == [pytest.approx(8 / 40 * 10.0)] * 6


def test_plan_paper_trim_rounds_frame_count_down_to_even():
    # 5% of 50 = 2.5 -> 2 per end -> 46 frames = 4.6 s -> 9.2 frames at 2 fps -> 9 -> 8 (even).
    plan = video_jigsaw.plan_clips(300, 10.0, num_clips=6, trim=video_jigsaw.TRIM_PAPER)
    assert [len(i) for i in plan.indices] == [8] * 6
    assert plan.indices[0][0] == 2 and plan.indices[0][-1] == 2 + 45


def test_plan_clamps_to_12_frames_and_drops_the_remainder_at_the_start():
    # 2 min at 25 fps = 3001 frames (one extra): 500 per clip, the extra frame dropped first.
    # Trim 50 per end -> 400 frames = 16 s -> 32 frames at 2 fps -> clamped to 12.
    plan = video_jigsaw.plan_clips(3001, 25.0, num_clips=6)
    assert [len(i) for i in plan.indices] == [12] * 6
    assert plan.indices[0][0] == 1 + 50 and plan.indices[5][-1] == 1 + 5 * 500 + 50 + 399
    # 4 clips of a 24 s 1-fps video: 6 frames per clip, trim 0 -> 6 s -> 12 frames wanted,
    # only 6 exist -> 6.
    assert [len(i) for i in video_jigsaw.plan_clips(24, 1.0, num_clips=4).indices] == [6] * 4
    with pytest.raises(ValueError, match="fewer than 2"):
        video_jigsaw.plan_clips(10, 1.0, num_clips=6)


def test_video_jigsaw_clips_frame_counts_and_chronology(long_video):
    # 30 s at 4 fps = 120 frames: 20 per clip, trim 2 per end, 16 frames = 4 s -> 8 frames.
    info = video.probe_video(long_video)
    assert (info.num_frames, info.fps) == (120, 4.0)
    sample = video_jigsaw.VideoJigsaw(container=containers.BOXED).apply(
        {"videos": [long_video], "where": "v"}, np.random.default_rng(1))
    assert not isinstance(sample, Skipped), sample
    assert len(sample["videos"]) == 6
    # 64 x 64 frames -> a multiple of 28 with about 128*28*28 pixels: 336 x 336 (by hand:
    # 64 * sqrt(100352 / 4096) = 316.8 -> ceil to 12 patches of 28).
    assert all(clip.shape == (8, 336, 336, 3) for clip in sample["videos"])
    assert sample["video_fps"] == [pytest.approx(2.0)] * 6  # 8 frames over 4 s
    # The red level rises with time: the clip shown as target[i] must be the i-th earliest.
    target = [int(t) for t in sample["solution"].split(",")]
    red = [float(sample["videos"][t - 1][..., 0].mean()) for t in target]
    assert red == sorted(red) and len(set(target)) == 6
    text = "".join(p.get("text", "") for p in sample["messages"][0]["content"])
    assert "Clip 6: " in text and containers.CONTAINERS[containers.BOXED] in text


# The frame index, drawn into every frame as an 8-bit binary code of flat 16 x 16 px blocks
# (black = 0, white = 1; bits 0-3 along the top row, 4-7 along the bottom row), over the
# moving-shapes picture (its square moves through rows 26-37, clear of the code). Flat
# 0 / 255 blocks survive mpeg4 and the jigsaw's bicubic resize: measured, the centre of a
# decoded block is within 4 levels of 0 or 255, so a frame one off cannot decode right.
CODE_BITS, CODE_BLOCK = 8, 16


def _code_cells(height: int, width: int, centre: bool = False):
    """(rows, cols) of each bit's block in a frame of this size (the code scales with the frame)."""
    block_h, block_w = height * CODE_BLOCK // 64, width * CODE_BLOCK // 64
    inset_h, inset_w = (block_h // 4, block_w // 4) if centre else (0, 0)
    for bit in range(CODE_BITS):
        row, col = divmod(bit, 4)
        top = 0 if row == 0 else height - block_h
        yield (slice(top + inset_h, top + block_h - inset_h),
               slice(col * block_w + inset_w, (col + 1) * block_w - inset_w))


def _index_coded_video(seconds: float, fps: float) -> np.ndarray:
    frames = synthetic.moving_shapes_video(seconds, fps, (64, 64))
    assert len(frames) <= 2 ** CODE_BITS
    for t, frame in enumerate(frames):
        for bit, (rows, cols) in enumerate(_code_cells(64, 64)):
            frame[rows, cols] = 255 if t >> bit & 1 else 0
    return frames


def _decoded_indices(frames: np.ndarray) -> list[int]:
    """The index each frame's code spells; every block must read clearly black or white."""
    out = []
    for frame in frames:
        levels = [frame[rows, cols].mean() for rows, cols in _code_cells(*frame.shape[:2], centre=True)]
        assert all(v < 20 or v > 235 for v in levels), levels
        out.append(sum(int(v > 128) << bit for bit, v in enumerate(levels)))
    return out


def test_clip_frames_are_the_planned_frames(tmp_path):
    path = str(tmp_path / "coded.mp4")
    video.write_video(path, _index_coded_video(30, 4), 4)  # 120 frames at 4 fps, as long_video
    # The code itself: every frame of the file spells its own index.
    assert _decoded_indices(video.read_frames(path, range(120))) == list(range(120))
    # read_frames returns exactly the frames asked for, in the order asked (not a neighbour).
    assert _decoded_indices(video.read_frames(path, [0, 9, 119, 1, 118, 64])) == [0, 9, 119, 1, 118, 64]
    # The jigsaw's clips: 20 frames per clip, 2 trimmed per end, 16 left (4 s) -> 8 frames at
    # 2 fps at offsets round(linspace(0, 15, 8)) = 0, 2, 4, 6, 9, 11, 13, 15 (by hand).
    sample = video_jigsaw.VideoJigsaw().apply({"videos": [path], "where": "v"}, np.random.default_rng(1))
    assert not isinstance(sample, Skipped), sample
    offsets = [0, 2, 4, 6, 9, 11, 13, 15]
    target = [int(t) for t in sample["solution"].split(",")]
    # target[i] names the clip shown for the i-th earliest segment; it holds that segment's frames.
    shown = [_decoded_indices(sample["videos"][t - 1]) for t in target]
    assert shown == [[20 * i + 2 + o for o in offsets] for i in range(6)]
    assert shown == [list(i) for i in video_jigsaw.plan_clips(120, 4.0).indices]


def test_short_missing_and_corrupt_videos_are_skipped(short_video, tmp_path):
    transform = video_jigsaw.VideoJigsaw()
    rng = np.random.default_rng(0)
    short = transform.apply({"videos": [short_video]}, rng)
    assert isinstance(short, Skipped) and short.reason == "video_too_short"
    missing = transform.apply({"videos": [str(tmp_path / "nope.mp4")], "where": "r:1"}, rng)
    assert missing.reason == "video_missing" and "nope.mp4" in missing.detail
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    bad = transform.apply({"videos": [str(corrupt)]}, rng)
    assert bad.reason == "video_unreadable" and "corrupt.mp4" in bad.detail


def test_sampling_a_whole_video_at_a_given_fps(long_video, tmp_path):
    # 120 frames at 4 fps, sampled at 1 fps: 30 frames, round(linspace(0, 119, 30)), 1.0 fps.
    frames, rate = video.read_video_at_fps(long_video, fps=1.0)
    assert frames.shape == (30, 64, 64, 3) and rate == pytest.approx(1.0)
    np.testing.assert_array_equal(video.sample_indices(120, 4.0, 1.0)[:4], [0, 4, 8, 12])
    # 0.3 fps wants 9 frames -> 8 (even); max_frames caps it.
    assert len(video.sample_indices(120, 4.0, 0.3)) == 8
    assert len(video.sample_indices(120, 4.0, 2.0, max_frames=11)) == 10
    row = decode_videos.DecodeVideos(fps=1.0).map({"videos": [long_video], "where": "r:1"})
    assert row["videos"][0].shape == (30, 64, 64, 3) and row["video_fps"] == [pytest.approx(1.0)]
    missing = decode_videos.DecodeVideos().map({"videos": [str(tmp_path / "x.mp4")], "where": "r:2"})
    assert missing.reason == "video_missing" and "x.mp4" in missing.where
