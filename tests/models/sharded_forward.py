"""Run as a script with 8 host devices: sharded runs must equal one device.

One process runs every check (each compiles for several mesh shapes) and prints `OK <check>`
for each that passed; test_sharded.py runs it once and reads those lines. Checks:
  forward   - logits with sharded params and batch;
  training  - value_and_grad of completion_logprobs (images in the batch, G=2), params and
              batch sharded, activation constraints bound; params and grads stay in shards;
  generate  - the sampler on a sharded model;
  global    - sharding.global_batch on one process equals device_put with batch sharding;
  bind      - inside activation_rules the decoder's logical constraints reach the program;
  learner / lora - one GRPO step (packed rows; LoRA) on a mesh equals one device;
  packed_blockwise - pooled packed rows through blockwise attention on a mesh equal one device.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import sys  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import sharding  # noqa: E402
from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset  # noqa: E402
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs  # noqa: E402
from oracle import pad_batch, pixels, sample_ids  # noqa: E402

CFG = preset("tiny")  # width 64, 2 layers, 4 heads / 2 KV heads: tensor 2 divides every sharded dim
MESHES = [dict(data=2, fsdp=2, tensor=2), dict(data=1, fsdp=4, tensor=2), dict(data=8, fsdp=1, tensor=1)]
G, TC = 2, 4


def inputs(rng, per_sample):
    """Left-padded prompts with images at the tiny config's token ids."""
    ids, mask = pad_batch([sample_ids(rng, [3 + i % 3] + [2] * len(g), g) for i, g in enumerate(per_sample)])
    ids = np.where(ids == 250, CFG.image_token_id, ids)
    ids = np.where(ids == 252, CFG.vision_start_token_id, ids)
    ids = np.where(ids == 253, CFG.vision_end_token_id, ids)
    grids = np.array([g for gs in per_sample for g in gs])
    return ids, mask, pixels(rng, grids), grids


def expected_shard(shape, mesh, fsdp_dim=None, tensor_dim=None):
    out = list(shape)
    if fsdp_dim is not None:
        out[fsdp_dim] //= mesh.shape["fsdp"]
    if tensor_dim is not None:
        out[tensor_dim] //= mesh.shape["tensor"]
    return tuple(out)


def assert_in_shards(tree, mesh, what):
    """Every device holds exactly its own piece of a few big tensors, by their logical axes."""
    lm = tree["language_model"]
    d, h, hd, mlp, vocab = 64, 4, 16, 128, CFG.text.vocab_size
    cases = {  # path -> (array, expected shard shape)
        "q_proj/kernel": (lm["layers_0"]["self_attn"]["q_proj"]["kernel"], expected_shard((d, h, hd), mesh, 0, 1)),
        "o_proj/kernel": (lm["layers_1"]["self_attn"]["o_proj"]["kernel"], expected_shard((h, hd, d), mesh, 2, 0)),
        "k_proj/bias": (lm["layers_0"]["self_attn"]["k_proj"]["bias"], expected_shard((2, hd), mesh, None, 0)),
        "gate_proj/kernel": (lm["layers_0"]["mlp"]["gate_proj"]["kernel"], expected_shard((d, mlp), mesh, 0, 1)),
        "embedding": (lm["embed_tokens"]["embedding"], expected_shard((vocab, d), mesh, 1, 0)),
        "vision qkv": (tree["visual"]["blocks_0"]["attn"]["qkv"]["kernel"], expected_shard((32, 96), mesh, 0, 1)),
    }
    for name, (arr, shard_shape) in cases.items():
        shards = arr.addressable_shards
        assert len(shards) == 8 and len({s.device for s in shards}) == 8, (what, name)
        got = {s.data.shape for s in shards}
        assert got == {shard_shape}, (what, name, dict(mesh.shape), got, shard_shape)
        pieces = {str(s.index) for s in shards}
        n_pieces = int(np.prod(arr.shape)) // int(np.prod(shard_shape))
        assert len(pieces) == n_pieces, (what, name, pieces)


def check_forward(model, rng):
    ids, mask, pv, grids = inputs(rng, [[(1, 4, 4)], [], [(1, 4, 6)], [(1, 6, 4), (1, 4, 4)]])
    single = model.logits(ids, mask, pv, grids)
    for shape in MESHES[1:2]:  # training covers every mesh; this is the model's own batch placement
        mesh = sharding.make_mesh(**shape)
        out = model.shard(mesh).logits(ids, mask, pv, grids)
        err = np.abs(out - single)[mask.astype(bool)].max()
        assert err < 1e-5, (shape, err)
        print("forward", shape, "max |diff|", err)


def _loss(module, params, batch, comp, comp_mask):
    lp, _ = completion_logprobs(module, params, batch, comp, comp_mask, num_generations=G)
    return lp.sum(), lp


def make_step(shardings=None):
    """Jitted (loss, log-probs), grads. GSPMD may lay the grads out as it likes; a train step
    pins them to the params' shardings (where the optimizer update runs), as done here."""
    def step(module, params, batch, comp, comp_mask):
        out, grads = jax.value_and_grad(_loss, argnums=1, has_aux=True)(module, params, batch, comp, comp_mask)
        return out, (grads if shardings is None else jax.lax.with_sharding_constraint(grads, shardings))
    return jax.jit(step, static_argnums=0)


def check_training(model, rng):
    per_sample = [[(1, 4, 4)], [], [(1, 4, 6)], [(1, 6, 4), (1, 4, 4)], [], [(1, 4, 4)], [(1, 4, 8)], []]
    ids, mask, pv, grids = inputs(rng, per_sample)
    batch = model.prepare(ids, mask, pv, grids)
    n = ids.shape[0] * G
    comp = rng.integers(3, 1000, (n, TC)).astype(np.int32)
    comp_mask = np.ones((n, TC), bool)
    comp_mask[3, 2:] = False
    (ref_loss, ref_lp), ref_grads = jax.device_get(make_step()(model.module, model.params, batch, comp, comp_mask))
    assert (ref_lp[comp_mask] < -1).all()
    for shape in MESHES:
        mesh = sharding.make_mesh(**shape)
        sharded = model.shard(mesh)
        assert_in_shards(sharded.params, mesh, f"params {shape}")
        gbatch = sharding.global_batch(batch, mesh)
        place = lambda a: jax.device_put(a, sharding.batch_sharding(mesh, a.shape))  # noqa: E731
        step = make_step(jax.tree.map(lambda a: a.sharding, sharded.params))
        with sharding.activation_rules(mesh):
            (loss, lp), grads = step(sharded.module, sharded.params, gbatch, place(comp), place(comp_mask))
        assert_in_shards(grads, mesh, f"grads {shape}")
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6, atol=1e-5, err_msg=str(shape))
        np.testing.assert_allclose(np.asarray(lp), ref_lp, atol=1e-5, err_msg=str(shape))
        worst = 0.0
        for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
            g = np.asarray(g)
            np.testing.assert_allclose(g, r, atol=1e-5, rtol=1e-5, err_msg=f"{shape} {jax.tree_util.keystr(path)}")
            worst = max(worst, float(np.abs(g - r).max()))
        print("training", shape, "loss", float(loss), "max |grad diff|", worst)


def check_generate(model, rng):
    ids, mask, pv, grids = inputs(rng, [[(1, 4, 4)], [], [(1, 4, 6)], [(1, 6, 4), (1, 4, 4)]])
    kw = dict(max_new_tokens=6, temperature=1.0, num_generations=G, seed=5)
    ref = model.generate(ids, mask, pv, grids, **kw)
    for shape in MESHES[:2]:  # the prompt rows split over data x fsdp, params over fsdp x tensor
        mesh = sharding.make_mesh(**shape)
        sharded = model.shard(mesh)
        out = sharded.generate(ids, mask, pv, grids, **kw)
        np.testing.assert_array_equal(out.tokens, ref.tokens, err_msg=str(shape))
        np.testing.assert_array_equal(out.mask, ref.mask, err_msg=str(shape))
        np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5, err_msg=str(shape))
        print("generate", shape, "max |logprob diff|", float(np.abs(out.logprobs - ref.logprobs).max()))


def check_global(model, rng):
    ids, mask, pv, grids = inputs(rng, [[(1, 4, 4)], [], [(1, 4, 6)], []])
    batch = model.prepare(ids, mask, pv, grids)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    got = sharding.global_batch(batch, mesh)
    for key, axis in [("input_ids", 0), ("attention_mask", 0), ("positions", 1), ("rope_deltas", 0)]:
        want = jax.device_put(batch[key], sharding.batch_sharding(mesh, batch[key].shape, batch_axis=axis))
        assert isinstance(got[key], jax.Array) and got[key].shape == batch[key].shape, key
        assert got[key].sharding.is_equivalent_to(want.sharding, want.ndim), (key, got[key].sharding)
        assert got[key].sharding.spec[axis] == ("data", "fsdp"), (key, got[key].sharding)
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(batch[key]), err_msg=key)
    assert got["video"] is None
    for k, v in batch["image"].items():
        assert got["image"][k].sharding.is_fully_replicated, k
        np.testing.assert_array_equal(np.asarray(got["image"][k]), v, err_msg=k)
    try:
        text_ids, text_mask = pad_batch([sample_ids(rng, [4 + i], []) for i in range(3)])
        sharding.global_batch(model.prepare(text_ids, text_mask), mesh)
    except sharding.ShardingError as e:
        assert "input_ids has 3 rows" in str(e) and "'data': 2, 'fsdp': 2" in str(e), e
    else:
        raise AssertionError("3 rows over 4 batch shards did not raise")


def check_bind(model, rng):
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = model.shard(mesh)
    x = jnp.zeros((4, 8, CFG.text.hidden_size))
    pos = jnp.zeros((3, 4, 8), jnp.int32)
    fn = jax.jit(lambda p, x: sharded.module.apply({"params": p}, x, pos, jnp.ones((4, 8), bool),
                                                   method="decode")[0])
    assert "sharding_constraint" not in fn.lower(sharded.params, x).as_text()  # no rules: no-ops
    with sharding.activation_rules(mesh):
        text = fn.lower(sharded.params, x).as_text()
    layers = CFG.text.num_hidden_layers
    assert text.count('[{"data", "fsdp"}, {}, {}]>') >= layers + 1, text.count("sharding_constraint")
    assert text.count('[{"data", "fsdp"}, {}, {"tensor"}, {}]>') == layers, text.count("sharding_constraint")


def _grpo_step(mesh, **overrides):
    """One demo GRPO step on a (data, fsdp, tensor) mesh with ragged completions whose reward differs within
    each group (real gradients): (trainer, metrics, the checkpoint's params)."""
    import tempfile

    from configs import demo
    from mmjax.jobs import grpo as grpo_job
    from mmjax.train import checkpoints
    from ragged import length_reward

    config = demo.get_config()
    config.mode, config.max_steps, config.save_steps = "grpo", 1, 1
    config.data.batch_size, config.grpo.num_generations = 4, 4
    config.grpo.max_completion_length, config.sample.allow_eos = 6, True  # the tiny model stops at random
    config.grpo.temperature = 4.0  # near-uniform over A-D and EOS: lengths spread over 1..6
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
    config.update_from_flattened_dict(overrides)
    with tempfile.TemporaryDirectory() as workdir:
        learner = grpo_job.build_trainer(config, workdir)
        learner.objective.reward = length_reward
        metrics = learner.train()
        saved = checkpoints.restore_latest(workdir).params
    return learner, metrics, saved


def _same_step(got, ref) -> None:
    """The mesh's step metrics against one device's."""
    assert got["loss"] != 0.0 and got["grad_norm"] > 0, got
    for key in ("reward", "completions/mean_length"):
        assert got[key] == ref[key], (key, got[key], ref[key])
    np.testing.assert_allclose(got["loss"], ref["loss"], atol=1e-6)
    np.testing.assert_allclose(got["grad_norm"], ref["grad_norm"], rtol=1e-5)


def _within_two_lr(got, ref) -> None:
    # Adam's first step is lr * g / (|g| + eps): gradient entries at rounding level (GRPO's
    # group-centred advantages cancel exactly for what a group shares, e.g. its image) are
    # amplified to up to lr either way, so the params agree to 2 * lr and the gradients
    # themselves are compared elementwise by the "training" check.
    from configs import demo
    lr = demo.get_config().optim.learning_rate
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel()
                            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref))])
    assert diffs.max() <= 2 * lr, diffs.max()


def check_learner(model, rng):
    """One GRPO step (rollout + update) on a data2 x fsdp2 x tensor2 mesh equals one device, with
    ragged completions and the packed update (issue 24) with its rows pooled over the prompts: the
    packed rows split over data x fsdp, each gathering its prompt's cache from whichever shard holds it."""
    packed = {"grpo.update_layout": "packed"}  # rows pooled over the prompts (grpo.packed_rows' default)
    ref_learner, ref_metrics, _ = _grpo_step((1, 1, 1), **packed)
    learner, metrics, _ = _grpo_step((2, 2, 2), **packed)
    assert metrics["completions/mean_length"] < 6 and metrics["update/packed_micro_batches"] == 1, metrics
    _same_step(metrics, ref_metrics)
    # The pooled rows round up to a multiple of the 4 row shards on the mesh: more empty slots, same numbers.
    assert metrics["completions/update_padding_fraction"] >= ref_metrics["completions/update_padding_fraction"]
    got = learner.model.params
    _within_two_lr(got, ref_learner.model.params)
    kernel = got["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"]
    assert kernel.addressable_shards[0].data.shape != kernel.shape, kernel.sharding  # really sharded
    print("learner: loss", metrics["loss"], "vs", ref_metrics["loss"])


def check_lora(model, rng):
    """One LoRA GRPO step (issue 25) on data2 x fsdp2 x tensor2 equals one device: the adapters train on the
    sharded frozen base (the KL's reference), and the rollouts' merged policy keeps the base's shards."""
    lora = {"grpo.beta": 0.04, "lora.rank": 4, "lora.alpha": 8.0}
    _, ref, ref_adapters = _grpo_step((1, 1, 1), **lora)
    learner, got, adapters = _grpo_step((2, 2, 2), **lora)
    _same_step(got, ref)
    _within_two_lr(adapters, ref_adapters)
    base = learner.objective.base
    merged = learner.objective._merge(base, adapters)
    for b, m in zip(jax.tree.leaves(base), jax.tree.leaves(merged)):
        assert m.sharding.is_equivalent_to(b.sharding, m.ndim), (m.sharding, b.sharding)
    kernel = merged["language_model"]["layers_0"]["mlp"]["up_proj"]["kernel"]
    assert kernel.addressable_shards[0].data.shape != kernel.shape, kernel.sharding  # really sharded
    print("lora: loss", got["loss"], "vs", ref["loss"])


def check_packed_blockwise(model, rng):
    """Pooled packed rows through blockwise attention (each row's prompt keys joined before its own as
    attention_blockwise.ANY_SEGMENT, the kernel run per device over the rows) on data2 x fsdp2 x tensor2
    equal the explicit prefix path on one device: log-probs and gradients (issue 24)."""
    from mmjax.models.kv_cache import completion_positions
    from mmjax.models.qwen2_5_vl.logprobs import packed_completion_logprobs
    from mmjax.rl import packing
    ids, mask, pv, grids = inputs(rng, [[(1, 4, 4)], [], [(1, 4, 6)], [(1, 6, 4), (1, 4, 4)]])
    batch = model.prepare(ids, mask, pv, grids)
    g = 4  # 16 completions: 7 pooled rows, 8 on the mesh's 4 row shards
    lengths = np.array([TC, 1, 1, 2, 1, 1, 1, 1, 2, 2, 3, 1, 1, 3, 1, 2])  # one at the maximum, many sharing a row
    comp = rng.integers(3, 1000, (len(lengths), TC)).astype(np.int32)
    comp_mask = np.arange(TC)[None] < lengths[:, None]
    pos = np.asarray(completion_positions(batch, TC, g))
    p = packing.pack(lengths, g, TC, pooled=True, multiple=4)  # rows split over data x fsdp
    assert p.row.shape[0] < len(lengths) and (p.segment.max(1) > 1).any(), p.row  # really packed
    packed = {"tokens": packing.packed(comp, p), "segments": p.segment, "slot": p.slot, "row_prompt": p.prompt,
              "positions": packing.packed(pos.transpose(1, 2, 0), p).transpose(2, 0, 1)}

    def loss(module, params, batch, comp_mask, q):
        lp, _ = packed_completion_logprobs(module, params, batch, q["tokens"], q["positions"], q["segments"],
                                           q["slot"], comp_mask, row_prompt=q["row_prompt"])
        return jnp.sum(lp * jnp.arange(1.0, TC + 1)), lp
    step = jax.jit(jax.value_and_grad(loss, argnums=1, has_aux=True), static_argnums=0)
    (ref_loss, ref_lp), ref_grads = jax.device_get(step(model.module, model.params, batch, comp_mask, packed))
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = model.replace(attention="blockwise").shard(mesh)
    rows = lambda a, axis=0: sharding.global_rows(np.asarray(a), mesh, axis)  # noqa: E731
    placed = {k: rows(v, 1 if k == "positions" else 0) for k, v in packed.items()}
    with sharding.activation_rules(mesh):
        (loss_, lp), grads = step(sharded.module, sharded.params, sharding.global_batch(batch, mesh),
                                  rows(comp_mask), placed)
    np.testing.assert_allclose(float(loss_), float(ref_loss), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lp), ref_lp, atol=1e-5)
    assert (ref_lp[comp_mask] < -1).all()
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))
    print("packed blockwise: loss", float(loss_), "vs", float(ref_loss))


CHECKS = {"forward": check_forward, "learner": check_learner, "lora": check_lora, "training": check_training,
          "packed_blockwise": check_packed_blockwise,
          "generate": check_generate, "global": check_global, "bind": check_bind}


def main(names):
    assert jax.device_count() == 8, jax.devices()
    model = Qwen2_5_VL.from_config(CFG, seed=3)
    failed = False
    for name in names or CHECKS:
        try:
            CHECKS[name](model, np.random.default_rng(0))
            print("OK", name, flush=True)
        except Exception:  # report every check, then fail
            traceback.print_exc()
            print("FAILED", name, flush=True)
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
