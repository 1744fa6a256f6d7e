"""mmjax.train.optim: schedules, AdamW wiring, clipping, weight-decay mask, freezing, master weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset
from mmjax.train import checkpoints, optim


@pytest.fixture(scope="module")
def tiny():
    return Qwen2_5_VL.from_config(preset("tiny"), seed=0)


def _hf_lr(step: int, lr: float, warmup: int, total: int, schedule: str) -> float:
    """transformers' get_{constant,cosine,linear}_schedule_with_warmup lambdas, times lr."""
    if step < warmup:
        return lr * step / max(1, warmup)
    if schedule == "constant":
        return lr
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return lr * max(0.0, (total - step) / max(1, total - warmup))


@pytest.mark.parametrize("schedule,warmup_kw,warmup", [
    ("constant", {}, 0), ("constant", {"warmup_steps": 7}, 7),
    ("cosine", {}, 0), ("cosine", {"warmup_ratio": 0.1}, 5),
    ("linear", {"warmup_steps": 10}, 10)])
def test_schedule_matches_closed_form(schedule, warmup_kw, warmup):
    cfg = optim.OptimizerConfig(learning_rate=2e-3, schedule=schedule, total_steps=50, **warmup_kw)
    assert cfg.warmup() == warmup
    sched = optim.learning_rate_schedule(cfg)
    got = np.array([float(sched(s)) for s in range(51)])
    want = np.array([_hf_lr(s, 2e-3, warmup, 50, schedule) for s in range(51)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-3 * 1e-6)  # float32 cos near 0
    if warmup:
        assert got[0] == 0.0 and got[warmup] == pytest.approx(2e-3)


def test_warmup_ratio_rounds_up_like_hf():
    assert optim.OptimizerConfig(schedule="cosine", total_steps=25, warmup_ratio=0.1).warmup() == 3


def test_defaults_are_the_visual_jigsaw_recipe():
    cfg = optim.OptimizerConfig()
    assert (cfg.learning_rate, cfg.schedule, cfg.weight_decay, cfg.max_grad_norm) == (1e-6, "constant", 0.01, 1.0)
    assert (cfg.b1, cfg.b2, cfg.eps) == (0.9, 0.999, 1e-8)
    assert float(optim.learning_rate_schedule(cfg)(123456)) == pytest.approx(1e-6)
    import dataclasses
    assert all(f.metadata.get("help") for f in dataclasses.fields(cfg))


@pytest.mark.parametrize("kw,match", [
    (dict(schedule="cosine"), "total_steps is required by schedule='cosine'"),
    (dict(warmup_ratio=0.1), "total_steps is required by warmup_ratio"),
    (dict(warmup_steps=3, warmup_ratio=0.1, total_steps=10), "set one"),
    (dict(schedule="step"), "schedule='step'"),
    (dict(schedule="cosine", total_steps=10, warmup_steps=10), "leaves no cosine decay"),
    (dict(b2=1.0), "b2=1.0"),
])
def test_bad_config_is_named(kw, match):
    with pytest.raises(ValueError, match=match):
        optim.OptimizerConfig(**kw)


def _toy():
    params = {"dense": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.5, -0.5])},
              "norm": {"scale": jnp.array([1.0, 2.0])}}
    grads1 = {"dense": {"kernel": jnp.array([[0.1, -0.2], [0.3, 0.4]]), "bias": jnp.array([1.0, -1.0])},
              "norm": {"scale": jnp.array([0.5, 0.25])}}
    grads2 = jax.tree.map(lambda g: -2.0 * g + 0.05, grads1)
    return params, grads1, grads2


def test_two_adamw_steps_by_hand():
    lr, wd, b1, b2, eps = 0.1, 0.5, 0.8, 0.9, 1e-3
    cfg = optim.OptimizerConfig(learning_rate=lr, weight_decay=wd, b1=b1, b2=b2, eps=eps, max_grad_norm=None)
    tx = optim.make_optimizer(cfg)
    params, g1, g2 = _toy()
    state = tx.init(params)
    want = jax.tree.map(np.asarray, params)
    m = jax.tree.map(np.zeros_like, want)
    v = jax.tree.map(np.zeros_like, want)
    for t, g in enumerate((g1, g2), start=1):
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        for mod, leaf in (("dense", "kernel"), ("dense", "bias"), ("norm", "scale")):
            gg = np.asarray(g[mod][leaf])
            m[mod][leaf] = b1 * m[mod][leaf] + (1 - b1) * gg
            v[mod][leaf] = b2 * v[mod][leaf] + (1 - b2) * gg ** 2
            step = (m[mod][leaf] / (1 - b1 ** t)) / (np.sqrt(v[mod][leaf] / (1 - b2 ** t)) + eps)
            decay = wd * want[mod][leaf] if leaf == "kernel" else 0.0  # no decay on biases / norms
            want[mod][leaf] = want[mod][leaf] - lr * (step + decay)
        for mod, leaf in (("dense", "kernel"), ("dense", "bias"), ("norm", "scale")):
            np.testing.assert_allclose(np.asarray(params[mod][leaf]), want[mod][leaf], rtol=1e-6,
                                       err_msg=f"step {t} {mod}/{leaf}")


def _first_moment(state, path):
    """The Adam mu of the leaf at `path` (tuple of keys) anywhere in the state."""
    for keys, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        names = tuple(getattr(k, "key", getattr(k, "name", None)) for k in keys)
        if "mu" in names and names[-len(path):] == path:
            return np.asarray(leaf)
    raise KeyError(path)


@pytest.mark.parametrize("scale,clipped", [(100.0, True), (0.5, False)])
def test_clipping_scales_big_gradients_to_max_norm(scale, clipped):
    cfg = optim.OptimizerConfig(learning_rate=0.1, b1=0.5, max_grad_norm=1.0, weight_decay=0.0)
    tx = optim.make_optimizer(cfg)
    params, g, _ = _toy()
    norm = float(optax.tree.norm(g))
    g = jax.tree.map(lambda x: x * scale / norm, g)  # global norm = scale
    _, state = tx.update(g, tx.init(params), params)
    seen = {p: _first_moment(state, p) / (1 - 0.5) for p in (("dense", "kernel"), ("dense", "bias"), ("norm", "scale"))}
    seen_norm = math.sqrt(sum(float((x ** 2).sum()) for x in seen.values()))
    assert seen_norm == pytest.approx(1.0 if clipped else 0.5, rel=1e-5)
    np.testing.assert_allclose(seen["dense", "bias"], np.asarray(g["dense"]["bias"]) / (scale if clipped else 1.0),
                               rtol=1e-5)


def test_decay_mask_on_the_model(tiny):
    mask = optim.decay_mask(tiny.params)
    lm = mask["language_model"]
    assert lm["embed_tokens"]["embedding"] and lm["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert tiny.params["language_model"]["layers_0"]["self_attn"]["q_proj"]["bias"].ndim == 2  # name, not rank
    assert not lm["layers_0"]["self_attn"]["q_proj"]["bias"]
    assert not lm["layers_0"]["input_layernorm"]["scale"] and not lm["norm"]["scale"]
    assert not mask["visual"]["blocks_0"]["norm1"]["scale"] and not mask["visual"]["merger"]["ln_q"]["scale"]
    assert mask["visual"]["patch_embed"] and mask["lm_head"]["kernel"]


def _n_floats(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _state_paths(state) -> list[tuple]:
    return [tuple(getattr(k, "key", getattr(k, "name", None)) for k in keys)
            for keys, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


@pytest.mark.parametrize("freeze_vision,freeze_merger", [(True, False), (False, True), (True, True)])
def test_frozen_params_keep_no_state_and_do_not_move(tiny, freeze_vision, freeze_merger):
    params = tiny.params
    visual = dict(params["visual"])
    merger = visual.pop("merger")
    frozen = {"tower": visual if freeze_vision else {}, "merger": merger if freeze_merger else {}}
    base = optim.OptimizerConfig(learning_rate=1e-2)
    cfg = optim.OptimizerConfig(learning_rate=1e-2, freeze_vision=freeze_vision, freeze_merger=freeze_merger)
    full_state = optim.make_optimizer(base).init(params)
    tx = optim.make_optimizer(cfg)
    state = tx.init(params)
    # Adam keeps mu and nu, float32 each, for exactly the trainable leaves
    assert optim.state_bytes(full_state) - optim.state_bytes(state) == 2 * 4 * _n_floats(frozen)
    paths = _state_paths(state)
    if freeze_merger:
        assert not any("merger" in p for p in paths)
    if freeze_vision:
        assert not any("blocks_0" in p or "patch_embed" in p for p in paths)
    assert any("lm_head" in p for p in paths)

    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    moved = lambda a, b: bool(jnp.any(a != b))  # noqa: E731
    assert moved(new["visual"]["merger"]["mlp_0"]["kernel"], merger["mlp_0"]["kernel"]) == (not freeze_merger)
    assert moved(new["visual"]["blocks_0"]["attn"]["qkv"]["kernel"],
                 params["visual"]["blocks_0"]["attn"]["qkv"]["kernel"]) == (not freeze_vision)
    assert moved(new["visual"]["patch_embed"], params["visual"]["patch_embed"]) == (not freeze_vision)
    assert moved(new["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"],
                 params["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"])


def test_clipping_ignores_frozen_gradients(tiny):
    params = tiny.params
    cfg = optim.OptimizerConfig(freeze_vision=True, freeze_merger=True, max_grad_norm=1.0)
    tx = optim.make_optimizer(cfg)
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["visual"] = jax.tree.map(lambda x: jnp.full_like(x, 1e3), params["visual"])  # huge, but frozen
    grads["lm_head"] = {"kernel": jnp.full_like(params["lm_head"]["kernel"], 1e-4)}     # norm << 1
    _, state = jax.jit(tx.update)(grads, tx.init(params), params)
    np.testing.assert_allclose(_first_moment(state, ("lm_head", "kernel")), 0.1 * 1e-4, rtol=1e-5)


def test_master_weights_are_float32_under_bf16_compute(tiny):
    model = tiny.replace(dtype=jnp.bfloat16)  # float32 params, bfloat16 compute
    assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
    tx = optim.make_optimizer(optim.OptimizerConfig(freeze_merger=True))
    state = tx.init(model.params)
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.1, dtype=jnp.bfloat16), model.params)  # bf16 grads
    updates, state = jax.jit(tx.update)(grads, state, model.params)
    params = optax.apply_updates(model.params, updates)
    floats = [x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(d == jnp.float32 for d in floats)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))


def test_bf16_params_are_refused_by_name(tiny):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), tiny.params)
    tx = optim.make_optimizer(optim.OptimizerConfig())
    with pytest.raises(TypeError, match=r"float32 master weights.*language_model/.*bfloat16"):
        tx.init(params)


def test_frozen_state_survives_a_checkpoint(tiny, tmp_path):
    params = tiny.params
    tx = optim.make_optimizer(optim.OptimizerConfig(freeze_vision=True, freeze_merger=True))
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.2), params)
    _, state = tx.update(grads, tx.init(params), params)
    with checkpoints.TrainCheckpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
        ckpt.save(1, params, state, {}, tiny.config)
    back = checkpoints.restore_latest(str(tmp_path), opt_state_target=jax.eval_shape(tx.init, params))
    assert jax.tree.structure(back.opt_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(back.opt_state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
