"""Image jigsaw (SPEC 1.1): tiling, the target convention, skips, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmjax.data import jigsaw
from mmjax.data.skips import DataError, Skipped
from mmjax import containers


def test_split_bounds_first_spans_get_the_extra_pixel():
    # 10 = 4 + 3 + 3 and 11 = 4 + 4 + 3 (divmod, extras first), by hand.
    np.testing.assert_array_equal(jigsaw.split_bounds(10, 3), [0, 4, 7, 10])
    np.testing.assert_array_equal(jigsaw.split_bounds(11, 3), [0, 4, 8, 11])
    np.testing.assert_array_equal(jigsaw.split_bounds(9, 3), [0, 3, 6, 9])


def test_tiles_of_a_real_photo_reassemble_exactly(photo):
    tiles = jigsaw.split_tiles(photo, 3, 3)  # 300 x 451: rows 100 each, cols 151, 150, 150
    assert [t.shape[:2] for t in tiles[:3]] == [(100, 151), (100, 150), (100, 150)]
    np.testing.assert_array_equal(jigsaw.assemble_tiles(tiles, 3, 3), photo)


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 60), width=st.integers(1, 60), rows=st.integers(1, 5),
       cols=st.integers(1, 5))
def test_tiling_is_lossless_and_balanced(height, width, rows, cols):
    if rows > height or cols > width:
        return
    image = np.arange(height * width * 3, dtype=np.int64).reshape(height, width, 3)
    tiles = jigsaw.split_tiles(image, rows, cols)
    np.testing.assert_array_equal(jigsaw.assemble_tiles(tiles, rows, cols), image)
    heights = [tiles[r * cols].shape[0] for r in range(rows)]
    widths = [tiles[c].shape[1] for c in range(cols)]
    assert max(heights) - min(heights) <= 1 and heights == sorted(heights, reverse=True)
    assert max(widths) - min(widths) <= 1 and widths == sorted(widths, reverse=True)


def test_target_convention_hand_checked():
    # Shown order [2, 0, 1]: tile 1 shows piece 2, tile 2 piece 0, tile 3 piece 1.
    # target[i] = the number piece i is shown under: piece 0 -> 2, 1 -> 3, 2 -> 1.
    np.testing.assert_array_equal(jigsaw.target_from_order(np.array([2, 0, 1])), [2, 3, 1])
    np.testing.assert_array_equal(jigsaw.target_from_order(np.array([0, 1, 2])), [1, 2, 3])


def test_image_jigsaw_sample_reassembles_from_its_target(photo):
    sample = jigsaw.ImageJigsaw(rows=3, cols=3).apply({"images": [photo], "id": "cat"},
                                                     np.random.default_rng(7))
    target = [int(t) for t in sample["solution"].split(",")]
    assert sorted(target) == list(range(1, 10))
    # The original piece i was shown as tile target[i]; put the shown tiles back in place.
    original = [sample["images"][t - 1] for t in target]
    np.testing.assert_array_equal(jigsaw.assemble_tiles(original, 3, 3), photo)
    assert sample["task"] == "jigsaw_image" and sample["container"] == containers.ANSWER


def test_prompt_numbers_each_tile_and_uses_the_container_text(photo):
    for container in (containers.ANSWER, containers.BOXED):
        sample = jigsaw.ImageJigsaw(rows=2, cols=2, container=container).apply(
            {"images": [photo]}, np.random.default_rng(0))
        content = sample["messages"][0]["content"]
        assert sum(part["type"] == "image" for part in content) == 4 == len(sample["images"])
        text = "".join(part.get("text", "") for part in content)
        for k in range(1, 5):
            assert f"Tile {k}: " in text
        assert "2x2" in text and containers.CONTAINERS[container] in text
        assert sample["container"] == container


def test_too_small_images_are_skipped_with_a_reason():
    transform = jigsaw.ImageJigsaw(rows=3, cols=3)
    small = np.zeros((83, 500, 3), np.uint8)  # shorter side < 28 * 3 = 84
    skipped = transform.apply({"images": [small], "where": "x.jsonl:3"}, np.random.default_rng(0))
    assert isinstance(skipped, Skipped) and skipped.reason == "image_too_small"
    assert skipped.where == "x.jsonl:3"
    ok = transform.apply({"images": [np.zeros((84, 84, 3), np.uint8)]}, np.random.default_rng(0))
    assert not isinstance(ok, Skipped)
    with pytest.raises(DataError, match="image_too_small"):
        jigsaw.ImageJigsaw(strict=True).apply({"images": [small]}, np.random.default_rng(0))


def test_permutation_reproducible_from_seed_epoch_index(photo, keyed):
    transform = jigsaw.ImageJigsaw(seed=3)
    row = {"images": [photo]}
    first = transform.map(keyed(row, epoch=1, index=5))["solution"]
    assert transform.map(keyed(row, epoch=1, index=5))["solution"] == first
    # A new transform, after other draws: the result depends on (seed, epoch, index) only.
    jigsaw.ImageJigsaw(seed=3).map(keyed(row, epoch=0, index=0))
    assert jigsaw.ImageJigsaw(seed=3).map(keyed(row, epoch=1, index=5))["solution"] == first
    others = {transform.map(keyed(row, epoch=e, index=i))["solution"]
              for e, i in [(0, 5), (2, 5), (1, 4), (1, 6)]}
    assert first not in others and len(others) == 4
    assert jigsaw.ImageJigsaw(seed=4).map(keyed(row, 1, 5))["solution"] != first
