"""grpo.update_layout="packed" (issue 24): the GRPO step's loss, metrics and gradients equal the
padded layout's, for per-token and per-sequence normalisers, the KL term and entropy; and the
packed log-probs compile once per (rows, width) bucket over a stream of random length mixes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_config
from mmjax.jobs import build
from mmjax.jobs import grpo as grpo_job
from mmjax.train.weighted import accumulate


def _config(**overrides):
    c = demo_config.get_config()
    c.mode = "grpo"
    c.data.batch_size, c.grpo.num_generations, c.grpo.max_completion_length = 2, 4, 6
    c.sample.allow_eos = True  # the tiny model stops at random: ragged completions
    c.max_steps = 1
    c.update_from_flattened_dict(overrides)
    return c


@pytest.fixture(scope="module")
def pieces():
    config = _config()
    tok = build.tokenizer(config)
    return tok, build.model(config, tok)


def _step(pieces, tmp_path, **overrides):
    tok, model = pieces
    model = model.replace(params=jax.tree.map(jnp.copy, model.params))  # the updates donate params
    trainer = grpo_job.build_trainer(_config(**overrides), str(tmp_path), tok=tok, model=model)
    trainer.objective.start(trainer.model.params)
    params, _, _, iterator, _ = trainer._restore_or_init()
    example = trainer.objective.prepare(params, [next(iterator)], 0, lambda: next(iterator))
    grad_sum, stats = None, None
    for micro in example.micro_batches:
        grads, s = trainer._grads(params, micro)
        grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
        stats = accumulate(stats, s)
    return example, grad_sum, stats


@pytest.mark.parametrize("options", [
    {"grpo.loss_type": "grpo", "grpo.beta": 0.04},  # per-sequence means, the KL term
    {"grpo.loss_type": "dr_grpo", "grpo.importance_sampling_level": "sequence"},  # constant normaliser, GSPO
])
def test_packed_step_equals_the_padded_one(pieces, tmp_path, options):
    padded = _step(pieces, tmp_path / "padded", **options)
    packed = _step(pieces, tmp_path / "packed", **options, **{"grpo.update_layout": "packed"})
    (micro,) = packed[0].micro_batches
    lengths = packed[0].rollouts[0].rollout.lengths
    assert lengths.min() < lengths.max()  # ragged
    assert micro.packed["tokens"].shape[0] < micro.tokens.shape[0]  # fewer rows than completions
    for name in ("loss", "entropy", *(("kl",) if "grpo.beta" in options else ())):
        np.testing.assert_allclose(float(packed[2][name].total), float(padded[2][name].total), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
        assert int(packed[2][name].count) == int(padded[2][name].count)
    for a, b in zip(jax.tree.leaves(padded[1]), jax.tree.leaves(packed[1])):
        scale = float(np.abs(np.asarray(a)).max()) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 * scale)
