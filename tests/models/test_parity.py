"""mmjax's Qwen2.5-VL against transformers (eager attention, float32, mm_token_type_ids passed)."""

import numpy as np
import pytest

import mmjax.models.qwen2_5_vl as qwen
from oracle import VIDEO, build_hf_model, hf_logits, pad_batch, pixels, sample_ids

TOL = 1e-4

# Several shapes of the tiny model: GQA and not, windows that split images into several
# windows (56 px = 2x2 merged tokens) or not (112 px), full-attention blocks, tied or not.
CONFIGS = {
    "gqa_untied_small_windows": dict(kv_heads=2, tie=False, window=56, fullatt=(1,)),
    "mha_tied_big_windows": dict(kv_heads=4, tie=True, window=112, fullatt=(0,)),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp(request.param))
    hf_model = build_hf_model(path, seed=len(request.param), **CONFIGS[request.param])
    return hf_model, qwen.load_hf(path, progress=False)


def _check(pair, ids, mask, grids=None, pv=None):
    hf_model, model = pair
    ref = hf_logits(hf_model, ids, mask, pv, grids)
    out = model.logits(ids, mask, pv, None if grids is None else np.array(grids))
    valid = mask.astype(bool)
    err = np.abs(ref - out)[valid].max()
    assert err <= TOL, err
    assert np.abs(ref[valid]).max() > 0.1  # the comparison is not between two zero arrays


def test_text_only(pair):
    rng = np.random.default_rng(0)
    ids, mask = pad_batch([sample_ids(rng, [13], [])])
    _check(pair, ids, mask)


def test_one_image(pair):
    rng = np.random.default_rng(1)
    grids = [(1, 8, 12)]  # 4 x 6 merged tokens: several windows at window=56
    ids, mask = pad_batch([sample_ids(rng, [5, 7], grids)])
    _check(pair, ids, mask, grids, pixels(rng, grids))


def test_three_images_of_different_sizes_in_one_sample(pair):
    rng = np.random.default_rng(2)
    grids = [(1, 4, 4), (1, 10, 6), (1, 6, 14)]
    ids, mask = pad_batch([sample_ids(rng, [3, 4, 2, 5], grids)])
    _check(pair, ids, mask, grids, pixels(rng, grids))


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_with_different_image_counts_and_padding(pair, side):
    rng = np.random.default_rng(3)
    per_sample = [[(1, 4, 6)], [], [(1, 6, 6), (1, 4, 4)]]
    seqs = [sample_ids(rng, [4 + i] + [3] * len(g), g) for i, g in enumerate(per_sample)]
    ids, mask = pad_batch(seqs, side=side)
    grids = [g for gs in per_sample for g in gs]
    _check(pair, ids, mask, grids, pixels(rng, grids))


def test_video(pair):
    hf_model, model = pair
    rng = np.random.default_rng(4)
    vgrid = [(2, 6, 8)]
    ids, mask = pad_batch([sample_ids(rng, [6, 5], vgrid, token=VIDEO)])
    pv = pixels(rng, vgrid)
    seconds = np.array([1.5], np.float32)
    ref = hf_logits(hf_model, ids, mask, pixel_values_videos=pv, video_grid_thw=np.array(vgrid),
                    second_per_grid_ts=seconds)
    out = model.logits(ids, mask, pixel_values_videos=pv, video_grid_thw=np.array(vgrid),
                       second_per_grid_ts=seconds)
    assert np.abs(ref - out).max() <= TOL


def test_pixels_matter(pair):
    """The image embeddings reach the logits: other pixels give other logits."""
    _, model = pair
    rng = np.random.default_rng(5)
    grids = [(1, 4, 4)]
    ids, mask = pad_batch([sample_ids(rng, [3, 3], grids)])
    pv = pixels(rng, grids)
    a = model.logits(ids, mask, pv, np.array(grids))
    b = model.logits(ids, mask, pv + 1.0, np.array(grids))
    assert np.abs(a - b)[0, -1].max() > 1e-3


def test_bfloat16_params_and_compute_stay_close_to_transformers_bf16(tmp_path):
    import jax
    import torch
    hf_model = build_hf_model(str(tmp_path), dtype=torch.bfloat16)
    model = qwen.load_hf(str(tmp_path), dtype="bfloat16", progress=False)
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {np.dtype("bfloat16")}
    rng = np.random.default_rng(6)
    grids = [(1, 8, 12)]
    ids, mask = pad_batch([sample_ids(rng, [5, 7], grids)])
    pv = pixels(rng, grids)
    ref = hf_logits(hf_model, ids, mask, pv, grids)
    out = model.logits(ids, mask, pv, np.array(grids))
    # bf16 has 8 mantissa bits: both sides round differently, so compare at bf16 resolution.
    assert np.abs(ref - out).max() <= 3e-2 * max(1.0, np.abs(ref).max())
    assert (ref.argmax(-1) == out.argmax(-1)).mean() >= 0.9
