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


def test_clip_frames_are_the_planned_frames(long_video):
    frames = synthetic.moving_shapes_video(30, 4, (64, 64))
    decoded = video.read_frames(long_video, [0, 9, 119])
    # mpeg4 at qscale 2 is near-lossless on flat colour: mean error of a few levels.
    assert np.abs(decoded.astype(int) - frames[[0, 9, 119]]).mean() < 3


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
