"""Packed completions (issue 24): log-probs and gradients equal the padded call's (itself checked
against torch autograd in test_completion_logprobs.py), for ragged lengths, a completion of one
token, one at the maximum, several images per prompt and a video."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.kv_cache import completion_positions
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs, packed_completion_logprobs
from mmjax.rl import packing
from oracle import VIDEO, build_hf_model, pad_batch, pixels, sample_ids

G, TC = 4, 8


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("packed"))
    build_hf_model(path, seed=5, kv_heads=2, tie=False, window=56, fullatt=(1,))
    return qwen.load_hf(path, progress=False)


def _case(kind, rng):
    if kind == "video":
        grids = [[(2, 4, 4)], [(2, 4, 6)]]
        ids, mask = pad_batch([sample_ids(rng, [4, 3], g, token=VIDEO) for g in grids])
        return ids, mask, dict(pixel_values_videos=np.concatenate([pixels(rng, g) for g in grids]),
                               video_grid_thw=np.array(sum(grids, [])),
                               second_per_grid_ts=np.array([1.0, 2.0], np.float32))
    grids = [[(1, 4, 4), (1, 6, 8)], [(1, 4, 6)]]  # several images in prompt 0
    ids, mask = pad_batch([sample_ids(rng, [3 + 2 * i] + [2] * len(g), g) for i, g in enumerate(grids)])
    return ids, mask, dict(pixel_values=np.concatenate([pixels(rng, g) for g in grids]),
                           image_grid_thw=np.array(sum(grids, [])))


@functools.lru_cache(maxsize=None)
def _grads(module, packed: bool):
    def loss(params, batch, comp, mask, pos, p):
        if packed:
            lp, _ = packed_completion_logprobs(module, params, batch, p["tokens"], p["positions"], p["segments"],
                                               p["slot"], mask, row_prompt=p.get("row_prompt"))
        else:
            lp, _ = completion_logprobs(module, params, batch, comp, mask, positions=pos, num_generations=G)
        return jnp.sum(lp * jnp.arange(1.0, TC + 1)), lp  # weights make a misplaced token show
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("kind, pooled, attention", [("images", False, "auto"), ("video", False, "auto"),
                                                     ("images", True, "auto"), ("images", True, "blockwise")])
def test_packed_logprobs_and_gradients_equal_the_padded_ones(model, kind, pooled, attention):
    """Rows packed per prompt, or pooled (prompt 1's completions fit one row, prompt 0's need two:
    3 rows gathering their prompt's cache, where per prompt runs 2 x 2). "auto" runs these tiny
    shapes explicitly; blockwise (what "auto" runs for long rows on CPU) joins each row's prompt
    before its own keys."""
    rng = np.random.default_rng(len(kind))
    ids, mask, vision = _case(kind, rng)
    batch = model.prepare(ids, mask, **vision)
    # Prompt 0: a 1-token and a full-length completion.
    lengths = np.array([1, TC, 3, 2, 1, 1, 2, 3] if pooled else [1, TC, 3, 2, 5, 1, 2, 7])
    comp = rng.integers(3, 240, (len(lengths), TC)).astype(np.int32)
    comp_mask = np.arange(TC)[None] < lengths[:, None]
    comp = np.where(comp_mask, comp, 2)
    pos = np.asarray(completion_positions(batch, TC, G))  # [3, N, Tc]
    p = packing.pack(lengths, G, TC, pooled=pooled)
    assert p.row.shape[0] == (3 if pooled else 4)  # packing saves rows: 8 completions in 2 x 2 rows, or 3
    packed = {"tokens": jnp.asarray(packing.packed(comp, p, fill=2)),
              "positions": jnp.asarray(packing.packed(pos.transpose(1, 2, 0), p).transpose(2, 0, 1)),
              "segments": jnp.asarray(p.segment), "slot": jnp.asarray(p.slot)}
    if pooled:
        packed["row_prompt"] = jnp.asarray(p.prompt)
        assert p.prompt.tolist() == [0, 0, 1]
    args = (model.params, batch, jnp.asarray(comp), jnp.asarray(comp_mask), jnp.asarray(pos), packed)
    (_, want), g_want = _grads(model.module, False)(*args)
    (_, got), g_got = _grads(model.replace(attention=attention).module, True)(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    assert (np.asarray(got)[comp_mask] < -1).all()
    for a, b in zip(jax.tree.leaves(g_want), jax.tree.leaves(g_got)):
        scale = float(np.abs(np.asarray(a)).max())
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 * scale + 1e-9)


@pytest.mark.parametrize("pooled", [False, True])
def test_one_compile_per_rows_bucket_over_random_length_mixes(model, pooled):
    """30 random mixes of completion lengths: the packed rows (per prompt, or pooled over the micro-batch
    as update_layout=auto packs by default) take a few bucketed values, and the packed pass compiles
    exactly once for each (the width is the fixed completion bucket)."""
    rng = np.random.default_rng(0)
    ids, mask, vision = _case("images", rng)
    batch = model.prepare(ids, mask, **vision)
    pos = np.asarray(completion_positions(batch, TC, G)).transpose(1, 2, 0)
    traces = []

    def score(params, batch, p, comp_mask):
        traces.append(p["tokens"].shape)  # runs once per trace
        return packed_completion_logprobs(model.module, params, batch, p["tokens"], p["positions"], p["segments"],
                                          p["slot"], comp_mask, row_prompt=p.get("row_prompt"))[0]

    jitted, rows = jax.jit(score), set()
    for _ in range(30):
        lengths = rng.integers(1, TC + 1, size=2 * G)
        comp = np.where(np.arange(TC)[None] < lengths[:, None], rng.integers(3, 240, (2 * G, TC)), 2)
        p = packing.pack(lengths, G, TC, pooled=pooled)
        rows.add(p.row.shape[0])
        packed = {"tokens": jnp.asarray(packing.packed(comp, p, fill=2)), "segments": jnp.asarray(p.segment),
                  "positions": jnp.asarray(packing.packed(pos, p).transpose(2, 0, 1)), "slot": jnp.asarray(p.slot)}
        if pooled:
            packed["row_prompt"] = jnp.asarray(p.prompt)
        jitted(model.params, batch, packed, jnp.asarray(np.arange(TC)[None] < lengths[:, None]))
    per_prompt = {2 * r for r in packing.ROW_BUCKETS if r <= G}  # 2 prompts x a bucket; pooled: a bucket or that
    assert len(rows) >= 2 and rows <= (per_prompt | set(packing.ROW_BUCKETS) if pooled else per_prompt)
    assert sorted(traces) == sorted((r, TC) for r in rows)  # exactly one compile per row count
