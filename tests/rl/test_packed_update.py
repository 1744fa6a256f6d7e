"""grpo.update_layout="packed" (issue 24): the GRPO step's loss, metrics and gradients equal the
padded layout's, for per-token and per-sequence normalisers, the KL term and entropy; `auto`
packs only where packing pays. (A SIGKILLed packed run resumes bit for bit: test_kill_resume.py.)"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_config
from mmjax.jobs import build
from mmjax.jobs import grpo as grpo_job
from mmjax.rl import packing
from mmjax.train.weighted import accumulate
from ragged import length_reward


def _config(**overrides):
    c = demo_config.get_config()
    c.mode = "grpo"
    c.data.batch_size, c.grpo.num_generations, c.grpo.max_completion_length = 2, 4, 6
    c.sample.allow_eos = True  # the tiny model stops at random: ragged completions
    c.grpo.temperature = 4.0  # near-uniform over A-D and EOS: lengths spread over 1..6 (the update uses it too)
    c.max_steps = 1
    c.update_from_flattened_dict(overrides)
    return c


def _trainer(config, workdir, **kwargs):
    trainer = grpo_job.build_trainer(config, str(workdir), **kwargs)
    trainer.objective.reward = length_reward
    return trainer


@pytest.fixture(scope="module")
def pieces():
    config = _config()
    tok = build.tokenizer(config)
    return tok, build.model(config, tok)


def _step(pieces, tmp_path, **overrides):
    tok, model = pieces
    model = model.replace(params=jax.tree.map(jnp.copy, model.params))  # the updates donate params
    trainer = _trainer(_config(**overrides), tmp_path, tok=tok, model=model)
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
    {"grpo.loss_type": "grpo", "grpo.beta": 0.04},  # per-sequence means, the KL term; rows pooled (the default)
    # constant normaliser, GSPO; each prompt its own rows
    {"grpo.loss_type": "dr_grpo", "grpo.importance_sampling_level": "sequence", "grpo.packed_rows": "per_prompt"},
])
def test_packed_step_equals_the_padded_one(pieces, tmp_path, options):
    padded = _step(pieces, tmp_path / "padded", **options)
    packed = _step(pieces, tmp_path / "packed", **options, **{"grpo.update_layout": "packed"})
    (micro,) = packed[0].micro_batches
    assert ("row_prompt" in micro.packed) == ("grpo.packed_rows" not in options)
    lengths = packed[0].rollouts[0].rollout.lengths
    assert lengths.min() < lengths.max()  # ragged
    assert float(padded[2]["loss"].total) != 0.0 and np.std(packed[0].rollouts[0].rewards) > 0
    assert micro.packed["tokens"].shape[0] < micro.tokens.shape[0]  # fewer rows than completions
    for name in ("loss", "entropy", *(("kl",) if "grpo.beta" in options else ())):
        np.testing.assert_allclose(float(packed[2][name].total), float(padded[2][name].total), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
        assert int(packed[2][name].count) == int(padded[2][name].count)
    assert max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(padded[1])) > 1e-4  # a real gradient
    for a, b in zip(jax.tree.leaves(padded[1]), jax.tree.leaves(packed[1])):
        scale = float(np.abs(np.asarray(a)).max()) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 * scale)


def test_auto_packs_only_where_packing_pays(pieces, tmp_path):
    """update_layout=auto: packed exactly when the step's pooled packed rows are at most 3/4 of its
    completions (packing.worth_packing), and the same numbers as the padded layout either way."""
    padded = _step(pieces, tmp_path / "padded")
    auto = _step(pieces, tmp_path / "auto", **{"grpo.update_layout": "auto"})
    (micro,) = auto[0].micro_batches
    rollout = auto[0].rollouts[0].rollout
    rows = packing.pack(np.maximum(rollout.lengths, 1), 4, rollout.tokens.shape[1], pooled=True).rows_per_prompt
    assert (micro.packed is not None) == packing.worth_packing(rows, 8) == (rows <= 6)
    np.testing.assert_allclose(float(auto[2]["loss"].total), float(padded[2]["loss"].total), rtol=1e-5, atol=1e-7)
    assert not packing.worth_packing(4, 4) and packing.worth_packing(6, 8) and not packing.worth_packing(7, 8)


@pytest.mark.parametrize("options", [
    {"grpo.loss_type": "grpo", "grpo.beta": 0.04},
    {"grpo.loss_type": "dr_grpo", "grpo.importance_sampling_level": "sequence"},
])
def test_length_bucketed_micro_batches_equal_the_padded_one(pieces, tmp_path, options):
    """update_layout=bucketed with 2 chunks: each prompt's 2 shorter completions in one micro-batch, its 2
    longer in the other, each at the width bucket of its longest: the loss and gradients of the padded run."""
    bucketed = _step(pieces, tmp_path / "bucketed", **options,
                     **{"grpo.update_layout": "bucketed", "grpo.completion_chunks": 2, "grpo.max_completion_length": 32})
    short, long = bucketed[0].micro_batches
    lengths = bucketed[0].rollouts[0].rollout.lengths.reshape(-1, 4)
    assert short.tokens.shape == (4, packing.width_bucket(int(np.sort(lengths)[:, :2].max()), 32))
    assert long.tokens.shape == (4, packing.width_bucket(int(lengths.max()), 32))
    assert short.tokens.shape[1] < 32  # a narrower program than the padded one
    padded32 = _step(pieces, tmp_path / "padded32", **options, **{"grpo.max_completion_length": 32})
    for name in ("loss", "entropy"):
        np.testing.assert_allclose(float(bucketed[2][name].total), float(padded32[2][name].total), rtol=1e-5,
                                   atol=1e-7, err_msg=name)
        assert int(bucketed[2][name].count) == int(padded32[2][name].count)
    for a, b in zip(jax.tree.leaves(padded32[1]), jax.tree.leaves(bucketed[1])):
        scale = float(np.abs(np.asarray(a)).max()) or 1.0
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5 * scale)
