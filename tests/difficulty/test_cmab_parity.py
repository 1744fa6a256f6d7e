"""CMAB masses captured while sampling, and both scores, equal the same quantities computed
from transformers' eager attention maps (`output_attentions=True`) on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mmjax.models.qwen2_5_vl as qwen
from mmjax.difficulty import cmab
from oracle import IMAGE, VIDEO, build_hf_model, pad_batch, pixels, sample_ids

STEPS, LAYERS, CODE_LAYER = 6, 4, 2


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cmab_model"))
    hf_model = build_hf_model(path, seed=21, layers=LAYERS, kv_heads=2)
    model = qwen.load_hf(path, progress=False)
    rng = np.random.default_rng(4)
    grids = [[(1, 4, 4)], [(1, 2, 4), (1, 4, 4)]]
    ids, mask = pad_batch([sample_ids(rng, [6, 3], grids[0]), sample_ids(rng, [3, 2, 5], grids[1])])
    flat = [g for gs in grids for g in gs]
    batch = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels(rng, flat), image_grid_thw=np.array(flat))
    rollout = model.generate(**batch, max_new_tokens=STEPS, eos_token_ids=[], capture="cmab")

    # transformers on prompt + completion; row t's query is the position before token t.
    full_ids = np.concatenate([ids, rollout.tokens], 1)
    full_mask = np.concatenate([mask, rollout.mask.astype(mask.dtype)], 1)
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(full_ids), attention_mask=torch.from_numpy(full_mask),
                       pixel_values=torch.from_numpy(batch["pixel_values"]),
                       image_grid_thw=torch.from_numpy(batch["image_grid_thw"]),
                       mm_token_type_ids=torch.from_numpy((full_ids == IMAGE).astype(np.int64)),
                       output_attentions=True)
    width = ids.shape[1]
    maps = np.stack([a.double().numpy() for a in out.attentions])        # [L, B, H, T, T]
    rows = maps[:, :, :, width - 1: width - 1 + STEPS, :width]            # [L, B, H, STEPS, prompt]
    prompt = mask.astype(bool)
    visual = np.isin(ids, [IMAGE, VIDEO]) & prompt
    text = prompt & ~visual
    before = text & (np.arange(width)[None] < visual.argmax(1)[:, None])
    groups = np.stack([visual, text, before], -1).astype(np.float64)      # [B, prompt, 3]
    ref = np.einsum("lbhts,bsg->btlhg", rows, groups)
    return rollout, ref, groups.sum(1)


def test_masses_equal_transformers_attention(captured):
    rollout, ref, sizes = captured
    assert rollout.attention_masses.shape == ref.shape
    np.testing.assert_allclose(rollout.attention_masses, ref, atol=1e-5)
    np.testing.assert_array_equal(rollout.group_sizes, sizes)


def test_scores_equal_formulas_on_transformers_attention(captured):
    rollout, ref, sizes = captured
    m = ref.mean(3)  # heads averaged first: [B, T, L, 3]
    # paper: geometric mean over layers 2..L-1 (1-based) of S_img / S_txt, then mean over tokens
    rho = m[..., 0] / m[..., 1]
    paper = np.exp(np.log(rho[:, :, 1:LAYERS - 1] + 1e-8).mean(2)).mean(1)
    # code: per-position means at one layer, first token skipped, ratio of sums
    a_img = m[:, 1:, CODE_LAYER, 0] / sizes[:, None, 0]
    a_txt = m[:, 1:, CODE_LAYER, 2] / sizes[:, None, 2]
    code = a_img.sum(1) / a_txt.sum(1)

    correct = np.array([True, False])
    got_paper = cmab.score_rollout(rollout, correct, cmab.CmabConfig("paper"))
    got_code = cmab.score_rollout(rollout, correct, cmab.CmabConfig("code", layer=CODE_LAYER))
    np.testing.assert_allclose(got_paper.scores, paper, rtol=1e-5)
    np.testing.assert_allclose(got_code.scores, code, rtol=1e-5)
    assert got_paper.levels[1] == "unsolved" and got_code.levels[1] == "unsolved"
    assert got_paper.levels[0] in ("easy", "medium", "hard")
