"""3D jigsaw (SPEC 1.3): point constraints, marker pixels, labels vs depth order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mmjax.data import depth_jigsaw, markers, synthetic
from mmjax.data.rng import record_rng
from mmjax.data.skips import Skipped


def _alpha_blend(top: float, bottom: float, alpha: int) -> float:
    return top * alpha / 255 + bottom * (255 - alpha) / 255


def test_marker_pixels_disc_outline_label_and_outside():
    grey = np.full((100, 100, 3), 100, np.uint8)
    out = markers.draw_markers(grey, [(50, 50)], ["1"], radius=15, alpha=120)
    # Inside the disc, away from the label: red at alpha 120 over grey 100.
    expected = [_alpha_blend(255, 100, 120), _alpha_blend(0, 100, 120), _alpha_blend(0, 100, 120)]
    np.testing.assert_allclose(out[50, 60], expected, atol=1)
    np.testing.assert_allclose(out[40, 50], expected, atol=1)
    # The 2 px rim at radius 15 is opaque red, all around.
    for row, col in [(50, 65), (50, 64), (50, 35), (35, 50), (65, 50)]:
        np.testing.assert_array_equal(out[row, col], [255, 0, 0])
    # Outside the marker nothing changes.
    np.testing.assert_array_equal(out[50, 66], [100, 100, 100])
    np.testing.assert_array_equal(out[50, 33], [100, 100, 100])
    # The label is white and centred: white pixels only near the centre, on both sides of it.
    white = np.argwhere((out == 255).all(axis=-1))
    assert len(white) >= 5
    assert np.abs(white - [50, 50]).max() <= 7
    assert abs(white[:, 0].mean() - 50) <= 2 and abs(white[:, 1].mean() - 50) <= 2


@pytest.mark.parametrize("seed", range(5))
def test_points_satisfy_every_constraint(seed):
    rgb, depth = synthetic.rgbd_scene(record_rng(seed, 0, 0), (240, 320))
    points = depth_jigsaw.pick_depth_points(depth, 6, np.random.default_rng(seed))
    assert points is not None and points.shape == (6, 2)
    values = depth[points[:, 0], points[:, 1]]
    assert np.all((values >= 0.1) & (values <= 10.0))
    assert np.all(np.diff(values) > 0)  # sorted near to far
    for a, b in itertools.combinations(range(6), 2):
        assert np.hypot(*(points[a] - points[b])) >= 40
        assert abs(values[a] - values[b]) > 0.2
    assert np.all(points >= 15) and np.all(points < np.array(depth.shape) - 15)


def test_missing_depth_is_never_picked():
    depth = np.zeros((200, 200), np.float32)
    depth[:, :100] = np.linspace(0.5, 9.5, 200)[:, None]  # right half has no measurement
    for seed in range(5):
        points = depth_jigsaw.pick_depth_points(depth, 4, np.random.default_rng(seed))
        assert points is not None and np.all(points[:, 1] < 100)


def test_unsatisfiable_frames_are_skipped_with_a_reason():
    flat = {"images": [np.zeros((200, 200, 3), np.uint8)], "depth": np.full((200, 200), 2.0),
            "where": "scene 9"}
    skipped = depth_jigsaw.DepthJigsaw().apply(flat, np.random.default_rng(0))
    assert isinstance(skipped, Skipped) and skipped.reason == "depth_points_unsatisfiable"
    assert skipped.where == "scene 9"
    no_depth = depth_jigsaw.DepthJigsaw().apply({"images": [np.zeros((9, 9, 3), np.uint8)]},
                                                 np.random.default_rng(0))
    assert no_depth.reason == "depth_jigsaw_needs_rgbd"


def test_marker_labels_follow_the_target(keyed):
    source = synthetic.SyntheticRgbdSource(3, seed=1)
    transform = depth_jigsaw.DepthJigsaw(seed=5)
    for index in range(3):
        row = source[index]
        sample = transform.map(keyed(row, epoch=0, index=index))
        target = [int(t) for t in sample["solution"].split(",")]
        assert sorted(target) == list(range(1, 7))
        # Redraw each point alone with the label the target claims for it: the i-th nearest
        # point must carry marker target[i]. Compare within 17 px of the point: other markers
        # are >= 40 px away, so they start >= 25 px away.
        rows, cols = np.indices(row["depth"].shape)
        for point, label in zip(sample["points"], target):
            alone = markers.draw_markers(row["images"][0], [tuple(point)], [str(label)])
            near = np.hypot(rows - point[0], cols - point[1]) <= 17
            np.testing.assert_array_equal(sample["images"][0][near], alone[near])
        assert transform.map(keyed(row, epoch=0, index=index))["solution"] == sample["solution"]
