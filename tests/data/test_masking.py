"""PISM masks (SPEC 2.1): sizes and fractions per mode, one vectorised call, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.data import masking

RATIOS = masking.DEFAULT_RATIOS


def test_rectangle_is_w_sqrt_l_by_h_sqrt_l_inside_the_image():
    height, width = 90, 160
    masks = masking.make_masks(0, 2, height, width, RATIOS, attempts=4, mode="rectangle")
    assert masks.shape == (2, 10, 4, height, width) and masks.dtype == bool
    for r, ratio in enumerate(RATIOS):
        # By hand, e.g. ratio 0.5: floor(160 * 0.7071) = 113 wide, floor(90 * 0.7071) = 63 high.
        box_w = int(np.floor(width * np.sqrt(ratio))) if ratio else 0
        box_h = int(np.floor(height * np.sqrt(ratio))) if ratio else 0
        for mask in masks[:, r].reshape(-1, height, width):
            assert mask.sum() == box_w * box_h
            if ratio:
                rows, cols = np.nonzero(mask)
                assert rows.max() - rows.min() + 1 == box_h and cols.max() - cols.min() + 1 == box_w
    assert masks[:, 5].sum(axis=(-1, -2)).min() == 113 * 63


def test_rectangle_positions_are_uniform_over_the_valid_range():
    masks = masking.make_masks(1, 1, 20, 20, [0.25], attempts=4000, mode="rectangle")[0, 0]
    lefts = np.argmax(masks.any(axis=1), axis=1)  # first masked column; box is 10 wide
    counts = np.bincount(lefts, minlength=11)
    assert lefts.max() == 10 and counts.min() > 0.6 * counts.mean()  # 11 positions, all used


def test_pixels_fraction_is_ratio():
    masks = masking.make_masks(2, 3, 112, 112, RATIOS, attempts=5, mode="pixels")
    fraction = masks.mean(axis=(0, 2, 3, 4))
    # Each ratio's fraction averages 15 * 12544 Bernoulli draws: std < 0.0012.
    np.testing.assert_allclose(fraction, RATIOS, atol=0.006)
    assert masks[:, 0].sum() == 0


def test_patches_fraction_is_exact_and_aligned():
    masks = masking.make_masks(3, 2, 112, 140, RATIOS, attempts=3, mode="patches", patch_size=28)
    blocks = masks.reshape(2, 10, 3, 4, 28, 5, 28)
    # Each 28 x 28 patch is all masked or all kept.
    assert np.all(blocks.all(axis=(4, 6)) == blocks.any(axis=(4, 6)))
    per_variant = blocks.all(axis=(4, 6)).sum(axis=(-1, -2))
    expected = np.round(np.asarray(RATIOS) * 20).astype(int)  # 4 x 5 = 20 patches
    np.testing.assert_array_equal(per_variant, np.broadcast_to(expected[None, :, None], (2, 10, 3)))


def test_attempts_and_images_draw_different_masks():
    masks = masking.make_masks(4, 2, 64, 64, [0.3], attempts=6, mode="rectangle")
    flat = masks.reshape(12, -1)
    assert len({m.tobytes() for m in flat}) == 12


@pytest.mark.parametrize("mode", masking.MODES)
def test_reproducible_from_a_seed_and_equal_to_apply_masks(mode):
    images = np.random.default_rng(0).integers(0, 256, (2, 56, 84, 3), dtype=np.uint8)
    a = masking.mask_images(images, 11, RATIOS, 3, mode)
    b = masking.mask_images(images, 11, RATIOS, 3, mode)
    c = masking.mask_images(images, 12, RATIOS, 3, mode)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    masks = masking.make_masks(11, 2, 56, 84, RATIOS, 3, mode)
    np.testing.assert_array_equal(a, masking.apply_masks(images, masks))
    # Unmasked pixels keep their value, masked ones are black.
    np.testing.assert_array_equal(a[~masks], np.broadcast_to(images[:, None, None], a.shape)[~masks])
    assert np.all(a[masks] == 0)


def test_patches_with_sides_not_multiple_of_the_patch():
    images = np.full((1, 30, 57, 3), 200, np.uint8)  # 2 x 3 grid of partial patches
    out = masking.mask_images(images, 0, [0.5], 2, "patches")
    masks = masking.make_masks(0, 1, 30, 57, [0.5], 2, "patches")
    np.testing.assert_array_equal(out, masking.apply_masks(images, masks))
    np.testing.assert_array_equal(masks[0, 0, :, 0, ::28].sum(-1) + masks[0, 0, :, 28, ::28].sum(-1),
                                  [3, 3])  # 3 of the 6 patches, counted at their top-left pixel


def test_mixed_sizes_are_grouped_by_size():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in [(28, 56, 3), (56, 28, 3), (28, 56, 3)]]
    out = masking.mask_images_by_size(images, 5, [0.0, 0.5], 2)
    assert [o.shape for o in out] == [(2, 2, 28, 56, 3), (2, 2, 56, 28, 3), (2, 2, 28, 56, 3)]
    same_size = masking.mask_images(np.stack([images[0], images[2]]), 5, [0.0, 0.5], 2)
    np.testing.assert_array_equal(out[0], same_size[0])  # first group is drawn first
    np.testing.assert_array_equal(out[2], same_size[1])
    np.testing.assert_array_equal(out[1][0, 0], images[1])  # ratio 0 leaves the image intact


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown mask mode"):
        masking.make_masks(0, 1, 8, 8, [0.1], 1, mode="circle")
    with pytest.raises(ValueError, match="ratios"):
        masking.make_masks(0, 1, 8, 8, [1.5], 1)
