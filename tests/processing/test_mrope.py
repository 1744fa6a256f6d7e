"""mmjax.processing.mrope against transformers' Qwen2_5_VLModel.get_rope_index on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.processing.mrope import get_rope_index, mm_token_type_ids


def _prompt(rng, parts, ids):
    """Token list from parts: int n -> n random text tokens; ("image"|"video", grid) -> placeholders."""
    out = []
    for part in parts:
        if isinstance(part, int):
            out += rng.integers(0, 480, part).tolist()
        else:
            kind, grid = part
            token = ids.image_token_id if kind == "image" else ids.video_token_id
            out += [ids.vision_start_token_id] + [token] * (int(np.prod(grid)) // 4) + [ids.vision_end_token_id]
    return out


def _batch(samples, pad_id, padding_side):
    length = max(map(len, samples)) + 2
    input_ids = np.full((len(samples), length), pad_id, np.int64)
    mask = np.zeros((len(samples), length), np.int64)
    for b, sample in enumerate(samples):
        span = slice(length - len(sample), length) if padding_side == "left" else slice(0, len(sample))
        input_ids[b, span], mask[b, span] = sample, 1
    return input_ids, mask


def _grids(samples_parts, kind):
    grids = [p[1] for parts in samples_parts for p in parts if not isinstance(p, int) and p[0] == kind]
    return np.array(grids, np.int64).reshape(-1, 3)


CASES = {
    "text_only": [[12], [5]],
    "several_images": [[4, ("image", (1, 4, 6)), 3, ("image", (1, 2, 2)), 2, ("image", (1, 6, 4)), 1],
                       [("image", (1, 8, 2)), 6]],
    "videos": [[3, ("video", (3, 4, 4)), 5], [2, ("video", (5, 2, 6)), 1, ("video", (1, 2, 2)), 4]],
    "mixed": [[2, ("image", (1, 4, 6)), 3, ("video", (4, 4, 2)), 2, ("image", (1, 2, 2)), 1],
              [6],
              [("video", (2, 6, 4)), 2, ("image", (1, 4, 4)), 3]],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("padding_side", ["left", "right", None])
@pytest.mark.parametrize("tokens_per_second", [2, 25])
def test_matches_transformers(case, padding_side, tokens_per_second, tiny_ids, hf_rope):
    rng = np.random.default_rng(len(case))
    parts = CASES[case]
    samples = [_prompt(rng, p, tiny_ids) for p in parts]
    if padding_side is None:  # no attention mask: every sample the same length
        samples = [s + rng.integers(0, 480, max(map(len, samples)) - len(s)).tolist() for s in samples]
        input_ids, mask = np.asarray(samples, np.int64), None
    else:
        input_ids, mask = _batch(samples, tiny_ids.pad_token_id, padding_side)
    image_grids, video_grids = _grids(parts, "image"), _grids(parts, "video")
    seconds = np.float32([2 / 24, 2 / 2, 2 / 29.97, 0.5])[: len(video_grids)]
    types = mm_token_type_ids(input_ids, tiny_ids.image_token_id, tiny_ids.video_token_id)

    ref_positions, ref_deltas = hf_rope(input_ids, types, mask, image_grids, video_grids, seconds, tokens_per_second)
    positions, deltas = get_rope_index(
        input_ids, mask, image_grids, video_grids, seconds,
        spatial_merge_size=2, image_token_id=tiny_ids.image_token_id, video_token_id=tiny_ids.video_token_id,
        tokens_per_second=tokens_per_second, vision_start_token_id=tiny_ids.vision_start_token_id,
    )
    assert positions.shape == (3, *input_ids.shape) and deltas.shape == (len(samples), 1)
    np.testing.assert_array_equal(positions, ref_positions)
    np.testing.assert_array_equal(deltas, ref_deltas)


def test_videos_without_second_per_grid_ts_use_one_second(tiny_ids, hf_rope):
    rng = np.random.default_rng(3)
    parts = [[2, ("video", (3, 2, 4)), 2]]
    input_ids = np.asarray([_prompt(rng, parts[0], tiny_ids)])
    types = mm_token_type_ids(input_ids, tiny_ids.image_token_id, tiny_ids.video_token_id)
    ref, ref_deltas = hf_rope(input_ids, types, None, None, _grids(parts, "video"), None, 2)
    positions, deltas = get_rope_index(
        input_ids, None, None, _grids(parts, "video"), None, spatial_merge_size=2,
        image_token_id=tiny_ids.image_token_id, video_token_id=tiny_ids.video_token_id, tokens_per_second=2,
    )
    np.testing.assert_array_equal(positions, ref)
    np.testing.assert_array_equal(deltas, ref_deltas)


def test_hand_computed_image_positions():
    # 2 text tokens, a 1x4x4 image (2x2 merged), 1 text token; image at positions 2..: rows/cols +2.
    I = 9
    input_ids = np.array([[1, 2, I, I, I, I, 3]])
    positions, deltas = get_rope_index(
        input_ids, None, np.array([[1, 4, 4]]), None, None,
        spatial_merge_size=2, image_token_id=I, video_token_id=8, tokens_per_second=2,
    )
    expected = [[0, 1, 2, 2, 2, 2, 4], [0, 1, 2, 2, 3, 3, 4], [0, 1, 2, 3, 2, 3, 4]]
    np.testing.assert_array_equal(positions[:, 0], expected)
    assert deltas.tolist() == [[4 + 1 - 7]]


def test_mm_token_type_ids_convention():
    ids = np.array([[5, 7, 7, 6, 8, 8, 5]])
    np.testing.assert_array_equal(mm_token_type_ids(ids, 7, 8), [[0, 1, 1, 0, 2, 2, 0]])


def _call(input_ids, image_grids, video_grids=None, **kw):
    return get_rope_index(np.asarray([input_ids]), None, image_grids, video_grids, None,
                          spatial_merge_size=2, image_token_id=9, video_token_id=8, tokens_per_second=2, **kw)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"image 0 has 3 placeholder tokens but its grid \[1, 4, 4\] needs 4"):
        _call([1, 9, 9, 9, 2], np.array([[1, 4, 4]]))
    with pytest.raises(ValueError, match="2 image grids given but the batch has 1 image placeholder runs"):
        _call([1, 9, 9, 9, 9, 2], np.array([[1, 4, 4], [1, 2, 2]]))
    with pytest.raises(ValueError, match="only 0 video grids were given"):
        _call([1, 8, 2], None)
    with pytest.raises(ValueError, match="not preceded by the vision start token 7"):
        _call([1, 9, 9, 9, 9, 2], np.array([[1, 4, 4]]), vision_start_token_id=7)
