"""Mixed precision (float32 master weights, bfloat16 compute, float32 head) and remat memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from oracle import pad_batch, pixels, sample_ids


@pytest.fixture(scope="module")
def f32_model():
    return qwen.Qwen2_5_VL.from_config(qwen.preset("tiny"), seed=1)


def _inputs(cfg, rng):
    grids = [(1, 4, 6)]
    seqs = [sample_ids(rng, [5, 4], grids), sample_ids(rng, [9], [])]
    seqs = [[cfg.image_token_id if t == 250 else cfg.vision_start_token_id if t == 252 else
             cfg.vision_end_token_id if t == 253 else t for t in s] for s in seqs]
    ids, mask = pad_batch(seqs, pad=cfg.text.pad_token_id or 0)
    return ids, mask, pixels(rng, grids, cfg.vision.patch_dim), np.array(grids)


def test_bf16_compute_on_f32_master_weights(f32_model):
    mixed = f32_model.replace(dtype="bfloat16")
    assert mixed.param_dtype == jnp.float32 and mixed.dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(mixed.params))
    ids, mask, pv, grid = _inputs(f32_model.config, np.random.default_rng(0))
    ref = f32_model.logits(ids, mask, pv, grid)
    got = mixed.logits(ids, mask, pv, grid)
    assert got.dtype == np.float32
    valid = mask.astype(bool)
    err = np.abs(got - ref)[valid].max()
    # Measured: max |error| 0.0049 against max |logit| 0.67, 0.73% of it (bf16 keeps 8 bits
    # of mantissa: 0.4% per rounding); the bound is 2.7x that.
    assert 1e-4 < err < 0.02 * np.abs(ref[valid]).max()  # really computed in bf16, and close

    comp = np.random.default_rng(1).integers(3, 200, (4, 6))
    lp, _ = mixed.completion_logprobs(ids, mask, comp, np.ones_like(comp), pv, grid, num_generations=2)
    lp32, _ = f32_model.completion_logprobs(ids, mask, comp, np.ones_like(comp), pv, grid, num_generations=2)
    assert lp.dtype == np.float32
    # Measured: max |error| 0.0012 on log-probs of -6.7 .. -7.5, relative 1.7e-4 at worst
    # (the float32 head and log-softmax keep it small); the bound is 3x that, relative.
    assert np.abs(lp - lp32).max() > 1e-5  # the compute really was bf16
    np.testing.assert_allclose(lp, lp32, rtol=5e-4, atol=0)

    out = mixed.generate(ids, mask, pv, grid, max_new_tokens=4, temperature=1.0, seed=0)
    assert out.logprobs.dtype == np.float32 and np.isfinite(out.logprobs).all()

    # Gradients land on the float32 master weights in float32. (Jitted: run op by op, this
    # backward pass took 35 s on the CI machine.)
    batch = mixed.prepare(ids, mask, pv, grid)
    grads = jax.jit(jax.grad(lambda p: completion_logprobs(mixed.module, p, batch, jnp.asarray(comp, jnp.int32),
                                                           jnp.ones(comp.shape, bool), num_generations=2)[0].sum()))(
        mixed.params)
    assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_bf16_params_for_inference(f32_model):
    bf16 = f32_model.replace(params=jax.tree.map(lambda x: x.astype(jnp.bfloat16), f32_model.params),
                             dtype="bfloat16")
    assert bf16.param_dtype == jnp.bfloat16 and bf16.dtype == jnp.bfloat16
    ids, mask, pv, grid = _inputs(f32_model.config, np.random.default_rng(2))
    logits = bf16.logits(ids, mask, pv, grid)
    assert logits.dtype == np.float32  # the head runs in float32 whatever the params
    ref = f32_model.logits(ids, mask, pv, grid)
    err = np.abs(logits - ref).max()
    # Measured: max |error| 0.0048 against max |logit| 0.64, 0.74% of it; the bound is 2.7x
    # that, relative to the logits' scale. Above 1e-4: the weights really are bf16.
    assert 1e-4 < err < 0.02 * np.abs(ref).max(), (err, np.abs(ref).max())


def _activation_bytes(model, remat: str, tokens: int) -> int:
    """Bytes a train step keeps from its forward pass for the backward pass (the residuals).

    Measured from the compiled forward half of value_and_grad (jax.vjp), whose outputs are
    exactly the saved activations: remat changes what is saved. XLA:CPU's temp_size of the
    whole step is no measure of it: its scheduler is not memory-aware, so recomputed values
    get fresh buffers and the total barely moves with remat on this backend.
    """
    m = model.replace(remat=remat)
    b, tp, g = 1, 64, 2
    tc = (tokens - tp) // g
    spec = jax.ShapeDtypeStruct
    batch = dict(input_ids=spec((b, tp), jnp.int32), attention_mask=spec((b, tp), bool),
                 positions=spec((3, b, tp), jnp.int32), rope_deltas=spec((b, 1), jnp.int32), image=None, video=None)
    comp, mask = spec((b * g, tc), jnp.int32), spec((b * g, tc), bool)
    params = jax.tree.map(lambda x: spec(x.shape, x.dtype), m.params)

    def forward_half(p, batch, comp, mask):
        loss = lambda q: completion_logprobs(m.module, q, batch, comp, mask, num_generations=g)[0].sum()
        return jax.vjp(loss, p)[1]

    compiled = jax.jit(forward_half).lower(params, batch, comp, mask).compile()
    return compiled.memory_analysis().output_size_in_bytes


@pytest.mark.parametrize("attention", ["explicit", "blockwise"])
def test_remat_lowers_activation_memory_of_a_train_step_at_2k_tokens(f32_model, attention):
    model = f32_model.replace(attention=attention)
    mem = {policy: _activation_bytes(model, policy, 2048) for policy in ("none", "save_qkv_out", "full")}
    assert mem["full"] < mem["save_qkv_out"] < 0.5 * mem["none"], mem
