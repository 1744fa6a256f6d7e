"""The memory options the planner proposes change bytes, not numbers: GRPO's completion chunks
give the one-micro-batch loss and gradients, and bfloat16 storage of what never updates (the
reference params, frozen towers) gives the same log-probs from bfloat16-exact weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_config
from mmjax.jobs import build
from mmjax.jobs import grpo as grpo_job
from mmjax.rl.grpo import GRPOConfig
from mmjax.rl.objective import chunk_rows
from mmjax.train import optim
from mmjax.train.weighted import accumulate


def _config(**overrides):
    c = demo_config.get_config()
    c.mode = "grpo"
    c.data.batch_size = 2
    c.grpo.num_generations = 4
    c.grpo.max_completion_length = 4
    c.max_steps = 1
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture(scope="module")
def pieces():
    """The tokenizer and a tiny model whose float32 params are exact in bfloat16 (as weights loaded
    from a bfloat16 checkpoint are)."""
    config = _config()
    tok = build.tokenizer(config)
    model = build.model(config, tok)
    exact = jax.tree.map(lambda p: p.astype(jnp.bfloat16).astype(p.dtype), model.params)
    return tok, model.replace(params=exact)


def _example(tok, model, tmp_path, **overrides):
    model = model.replace(params=jax.tree.map(jnp.copy, model.params))  # the updates donate params
    trainer = grpo_job.build_trainer(_config(**overrides), str(tmp_path), tok=tok, model=model)
    trainer.objective.start(trainer.model.params)
    params, opt_state, _, iterator, _ = trainer._restore_or_init()
    example = trainer.objective.prepare(params, [next(iterator)], 0, lambda: next(iterator))
    return trainer, params, example


@pytest.fixture(scope="module")
def with_reference(pieces, tmp_path_factory):
    """The one-micro-batch example with a float32 reference (beta > 0), shared by two tests."""
    tok, model = pieces
    return _example(tok, model, tmp_path_factory.mktemp("whole"), **{"grpo.beta": 0.04, "grpo.loss_type": "grpo"})


def _grads(trainer, params, example):
    """The Trainer's summed gradients and accumulated statistics over the example's micro-batches."""
    grad_sum, stats = None, None
    for micro in example.micro_batches:
        grads, s = trainer._grads(params, micro)
        grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
        stats = accumulate(stats, s)
    return grad_sum, stats


def test_chunk_rows_split_each_prompts_completions_in_order():
    # 2 prompts x G=4 in 2 chunks: chunk 0 = completions 0-1 of each prompt, chunk 1 = 2-3.
    assert [c.tolist() for c in chunk_rows(8, 4, 2)] == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert [c.tolist() for c in chunk_rows(8, 4, 1)] == [list(range(8))]
    with pytest.raises(ValueError, match="completion_chunks=3: must be an int >= 1 dividing num_generations=4"):
        GRPOConfig(num_generations=4, completion_chunks=3)


def test_completion_chunks_give_the_whole_micro_batchs_loss_and_gradients(pieces, with_reference, tmp_path):
    # loss_type grpo: per-sequence means, where how rows are split matters most.
    tok, model = pieces
    whole = with_reference  # the reference pass is chunked too (beta > 0)
    chunked = _example(tok, model, tmp_path / "chunked",
                       **{"grpo.beta": 0.04, "grpo.loss_type": "grpo", "grpo.completion_chunks": 2})
    assert len(whole[2].micro_batches) == 1 and len(chunked[2].micro_batches) == 2
    assert chunked[2].micro_batches[0].tokens.shape[0] == whole[2].micro_batches[0].tokens.shape[0] // 2
    np.testing.assert_array_equal(whole[2].rollouts[0].rewards, chunked[2].rollouts[0].rewards)  # same rollout
    (g1, s1), (g2, s2) = _grads(*whole), _grads(*chunked)
    assert int(s1["loss"].count) == int(s2["loss"].count)
    np.testing.assert_allclose(float(s2["loss"].total), float(s1["loss"].total), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(s2["kl"].total), float(s1["kl"].total), rtol=1e-6, atol=1e-8)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        scale = float(np.abs(np.asarray(a)).max()) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * scale)


def test_bfloat16_reference_params_give_the_same_reference_log_probs(pieces, with_reference, tmp_path):
    tok, model = pieces
    f32 = with_reference
    bf16 = _example(tok, model, tmp_path / "bf16",
                    **{"grpo.beta": 0.04, "grpo.loss_type": "grpo", "model.frozen_dtype": "bfloat16"})
    ref = bf16[0].objective.ref_params
    assert {x.dtype for x in jax.tree.leaves(ref)} == {jnp.dtype(jnp.bfloat16)}
    bytes_of = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))  # noqa: E731
    assert bytes_of(ref) * 2 == bytes_of(f32[0].objective.ref_params)
    np.testing.assert_array_equal(np.asarray(bf16[2].micro_batches[0].ref_logp),
                                  np.asarray(f32[2].micro_batches[0].ref_logp))
    # The policy stays float32 master weights.
    assert {x.dtype for x in jax.tree.leaves(bf16[1])} == {jnp.dtype(jnp.float32)}


def test_bfloat16_frozen_towers_train_as_the_float32_ones(pieces, tmp_path):
    tok, model = pieces
    frozen = {"optim.freeze_vision": True, "optim.freeze_merger": True}
    f32 = _example(tok, model, tmp_path / "f32", **frozen)
    bf16 = _example(tok, model, tmp_path / "bf16", **frozen, **{"model.frozen_dtype": "bfloat16"})
    trainer, params, example = bf16
    assert {x.dtype for x in jax.tree.leaves(params["visual"])} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(params["language_model"])} == {jnp.dtype(jnp.float32)}
    (g1, s1), (g2, s2) = _grads(*f32), _grads(*bf16)
    np.testing.assert_allclose(float(s2["loss"].total), float(s1["loss"].total), rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(g1["language_model"]), jax.tree.leaves(g2["language_model"])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6 * float(np.abs(a).max() or 1))
    # Trainable params must still be float32 master weights.
    with pytest.raises(TypeError, match="float32 master weights"):
        optim.make_optimizer(optim.OptimizerConfig(freeze_vision=True)).init(
            {**params, "language_model": jax.tree.map(lambda p: p.astype(jnp.bfloat16), params["language_model"])})
    # The optimizer takes the bfloat16 frozen leaves and leaves them as they are (the update
    # donates its params: this trainer's are a copy of the fixture's).
    visual = jax.tree.map(np.asarray, params["visual"])
    _, opt_state, *_ = trainer._restore_or_init()
    new, *_ = trainer._update(params, opt_state, example)
    assert all(np.array_equal(np.asarray(a), b) and a.dtype == b.dtype
               for a, b in zip(jax.tree.leaves(new["visual"]), jax.tree.leaves(visual)))
