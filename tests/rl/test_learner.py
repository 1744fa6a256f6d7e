"""The GRPO objective in the Trainer, end to end on the tiny model: images reach the update,
metrics, exact resume, online filtering, the loss normaliser, compile counts."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_config
from mmjax.data.batching import arrays
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import build
from mmjax.models import sampler
from mmjax.processing.buckets import bucket_size
from mmjax.rl.update import GRPOLoss, GRPOMicroBatch
from mmjax.train import update as update_lib
from mmjax.train import checkpoints

TRL_NAMES = ("reward", "reward_std", "rewards/accuracy_choice/mean", "rewards/accuracy_choice/std",
             "frac_reward_zero_std", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean",
             "clip_ratio/region_mean", "completions/mean_length", "completions/max_length",
             "completions/clipped_ratio", "sampling/sampling_logp_difference/mean",
             "sampling/sampling_logp_difference/max", "num_tokens", "step_time", "tokens_per_second",
             "learning_rate", "grad_norm")


def _config(**overrides):
    c = demo_config.get_config()
    c.mode = "grpo"
    c.data.batch_size = 4
    c.grpo.num_generations = 4
    c.optim.total_steps = 6
    c.update_from_flattened_dict(overrides)  # dotted keys, e.g. "optim.freeze_vision"
    return c


@pytest.fixture(scope="module")
def pieces():
    config = _config()
    tok = build.tokenizer(config)
    model = build.model(config, tok)
    batch = next(iter(build.dataset(config, tok, model)))
    return config, tok, model, batch


def _micro(model, batch, config, pixels_scale=1.0) -> GRPOMicroBatch:
    device = arrays(batch)
    if pixels_scale != 1.0:
        device = {**device, "image": {**device["image"], "pixel_values": device["image"]["pixel_values"] * pixels_scale}}
    g = config.grpo.num_generations
    out = sampler.generate(model.module, model.params, arrays(batch), max_new_tokens=1, num_generations=g,
                           sampling=sampler.SamplingParams(1.0), seed=3)
    n = len(out.tokens)
    return GRPOMicroBatch(batch=out.prompt_batch(device), tokens=jnp.asarray(out.tokens), mask=jnp.asarray(out.mask),
                          positions=jnp.asarray(out.completion_positions), sampler_logp=jnp.asarray(out.logprobs),
                          old_logp=jnp.asarray(out.logprobs), row_mask=jnp.ones(n, bool),
                          advantages=jnp.asarray(np.tile([1.0, -1.0], n // 2), jnp.float32))


def _grads_fn(model, config, freeze=False):
    """The Trainer's jitted gradient function for the GRPO loss."""
    loss = GRPOLoss(model.module, build.grpo_config(config))
    return lambda p, micro: update_lib.microbatch_grads(p, micro, loss_fn=loss, freeze_vision=freeze,
                                                        freeze_merger=freeze)


def _prepare(trainer, params, iterator, step=0):
    """The objective's example for one step, drawing from `iterator` as the Trainer does."""
    batches = [next(iterator) for _ in range(trainer.cfg.gradient_accumulation_steps)]
    return trainer.objective.prepare(params, batches, step, lambda: next(iterator))


def test_images_reach_the_update(pieces):
    config, _, model, batch = pieces
    grads_fn = _grads_fn(model, config)
    m1 = _micro(model, batch, config)
    m2 = _micro(model, batch, config, pixels_scale=-1.0)  # only the pixels differ
    m2 = m1.replace(batch=m2.batch)
    g1, s1 = grads_fn(model.params, m1)
    g2, s2 = grads_fn(model.params, m2)
    visual = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g1["visual"])])
    assert np.abs(visual).max() > 0  # the vision tower gets gradients
    diff = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)))
    assert diff > 1e-6  # and the gradients depend on the pixels
    assert float(s1["entropy"].total) != float(s2["entropy"].total)  # so does the forward pass


@pytest.mark.parametrize("freeze", [False, True])
def test_frozen_vision_tower_does_not_move(pieces, freeze, tmp_path):
    config, tok, _, _ = pieces
    config = _config(**{"optim.freeze_vision": freeze, "optim.freeze_merger": freeze, "max_steps": 1})
    trainer = grpo_job.build_trainer(config, workdir=str(tmp_path), tok=tok)
    before = jax.tree.map(np.asarray, trainer.model.params)
    params, opt_state, _, iterator, _ = trainer._restore_or_init()
    params, *_ = trainer._update(params, opt_state, _prepare(trainer, params, iterator))
    moved = lambda key: max(float(np.abs(np.asarray(a) - b).max())  # noqa: E731
                            for a, b in zip(jax.tree.leaves(params[key]), jax.tree.leaves(before[key])))
    assert moved("language_model") > 0
    assert (moved("visual") == 0) == freeze


def test_a_frozen_vision_tower_is_cut_from_the_backward_pass(pieces):
    """With freeze_vision the ViT's gradients are exact zeros (stop_gradient), not computed and masked."""
    config, _, model, batch = pieces
    micro = _micro(model, batch, config)
    grads = {}
    for freeze in (False, True):  # jitted, as the Trainer runs it (op by op it took 40 s)
        grads[freeze], _ = _grads_fn(model, config, freeze)(model.params, micro)
    largest = lambda tree: max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(tree))  # noqa: E731
    assert largest(grads[False]["visual"]) > 0 and largest(grads[True]["visual"]) == 0
    # The decoder's gradients are those of the unfrozen run up to float32 rounding (the two programs
    # differ, so XLA may sum in another order): 1e-5 of the tensor's scale (measured: 8e-8 on 0.1).
    frozen, unfrozen = (np.asarray(jax.tree.leaves(grads[f]["language_model"])[0]) for f in (True, False))
    np.testing.assert_allclose(frozen, unfrozen, rtol=1e-5, atol=1e-5 * float(np.abs(unfrozen).max()))


def test_rollouts_keep_the_pipelines_explicit_prompt_buckets(pieces, tmp_path):
    # config.data.bucket_lengths reach the sampler: a batch padded to one is not padded again
    # to the default rule's bucket, and the update sees the pipeline's prompt length.
    _, tok, _, batch = pieces
    t = arrays(batch)["input_ids"].shape[1]
    own = next(n for n in range(t + 1, 2 * t) if bucket_size(n) != n)  # a length the rule never picks
    trainer = grpo_job.build_trainer(_config(**{"data.bucket_lengths": (own,)}), str(tmp_path), tok=tok)
    data_batch = next(iter(trainer.data))
    assert arrays(data_batch)["input_ids"].shape[1] == own
    scored, prompts = trainer.objective._rollout(trainer.model.params, data_batch, seed=0)
    assert scored.rollout.prompt_ids.shape[1] == prompts["input_ids"].shape[1] == own


def _train(config, workdir, tok):
    trainer = grpo_job.build_trainer(config, workdir, tok=tok)
    trainer.train()
    return jax.tree.map(np.asarray, trainer.model.params)


@pytest.mark.slow  # a whole run of the job
def test_metrics_and_exact_resume(pieces, tmp_path):
    config, tok, _, _ = pieces
    full = _train(_config(max_steps=6, save_steps=2), str(tmp_path / "full"), tok)
    rows = [json.loads(line) for line in open(tmp_path / "full" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 7))
    for name in TRL_NAMES:
        assert name in rows[-1], name
    assert rows[-1]["num_tokens"] > rows[0]["num_tokens"] > 0  # cumulative, as TRL's
    # The demo's one-token answers: every call decodes one step for every row, nothing is padding.
    assert {(r["completions/padding_fraction"], r["completions/update_padding_fraction"],
             r["completions/limit_by_one_row"]) for r in rows} == {(0.0, 0.0, 0.0)}
    assert os.path.isdir(tmp_path / "full" / "tb")

    part = str(tmp_path / "part")
    _train(_config(max_steps=3, save_steps=2), part, tok)  # stops after step 3 (saved at 2 and 3)
    resumed = _train(_config(max_steps=6, save_steps=2), part, tok)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(line) for line in open(os.path.join(part, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == list(range(1, 7))  # no duplicated steps after the resume


@pytest.mark.slow  # a whole run of the job
def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(pieces, tmp_path, caplog):
    config, tok, model, _ = pieces
    workdir = str(tmp_path / "w")
    _train(_config(max_steps=4, save_steps=2), workdir, tok)
    newest = os.path.join(checkpoints.checkpoint_dir(workdir), "4")
    for root, _, files in os.walk(os.path.join(newest, "params")):
        for name in files:
            if not name.endswith(".txt") and "metadata" not in name:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    state = checkpoints.restore_latest(workdir, params_target=model.params)
    assert state.step == 2
    assert "cannot be restored" in caplog.text and newest in caplog.text


@pytest.mark.slow  # a whole run of the job
def test_kl_iterations_and_online_filtering_run_and_are_logged(pieces, tmp_path):
    """beta > 0 keeps a reference policy (kl logged, and > 0 once the policy moved),
    num_iterations = 2 recomputes the old log-probs once, and online filtering drops the
    zero-signal groups (there are some) and draws more micro-batches to refill the step."""
    config, tok, _, _ = pieces
    config = _config(**{"max_steps": 2, "grpo.beta": 0.04, "grpo.num_iterations": 2,
                        "filter_zero_std_groups": True})
    trainer = grpo_job.build_trainer(config, str(tmp_path), tok=tok)
    grpo = trainer.objective
    assert grpo.recompute_old
    params, opt_state, _, iterator, _ = trainer._restore_or_init()
    grpo.start(params)
    example = _prepare(trainer, params, iterator)
    scored = example.rollouts
    groups = np.concatenate([s.rewards for s in scored]).reshape(-1, config.grpo.num_generations)
    zero = np.all(groups == groups[:, :1], axis=1)
    keep = np.concatenate([s.keep for s in scored]).reshape(groups.shape)[:, 0]
    np.testing.assert_array_equal(keep, ~zero)  # exactly the zero-signal groups are dropped
    assert zero.sum() > 0 and len(scored) > 1  # the filter really ran and refilled the step
    for s, micro in zip(scored, example.micro_batches):  # recomputed old log-probs equal the sampler's
        kept = np.asarray(micro.mask)
        old = np.asarray(micro.old_logp)
        np.testing.assert_allclose(old[kept], s.rollout.logprobs[kept], atol=1e-5)
        assert not old[~kept].any()  # dropped rows take no part
    metrics = trainer.train()
    first = json.loads(open(tmp_path / "metrics.jsonl").readline())  # the step prepared above, logged
    assert first["filter/dropped_groups"] == zero.sum() and first["filter/micro_batches"] == len(scored)
    assert metrics["kl"] > 0 and "filter/dropped_groups" in metrics


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_masked_truncated_rows_still_count_in_the_loss_denominator(pieces, tmp_path, loss_type):
    """mask_truncated_completions zeroes a truncated row's tokens but, as in TRL, keeps the row
    in the grpo / dr_grpo denominators (mean over all rows; rows x max_completion_length)."""
    _, tok, _, _ = pieces
    max_len = 2
    config = _config(**{"grpo.mask_truncated_completions": True, "grpo.loss_type": loss_type,
                        "grpo.max_completion_length": max_len, "sample.allow_eos": True, "max_steps": 1})
    trainer = grpo_job.build_trainer(config, str(tmp_path), tok=tok)
    params, _, _, iterator, _ = trainer._restore_or_init()
    example = _prepare(trainer, params, iterator)
    (s,), (micro,) = example.rollouts, example.micro_batches
    stopped, n = s.rollout.stopped, len(s.rollout.stopped)
    assert 0 < stopped.sum() < n  # some rows truncated, some not
    _, stats = trainer._grads(params, micro)
    # TRL's formula on the same numbers: per_token = -A * ratio (no clipping at ratio ~ 1), the
    # truncated rows' tokens zeroed, then grpo: mean over all n rows of the row's token mean;
    # dr_grpo: the token sum / (n * max_completion_length).
    logp = np.asarray(trainer.objective._logprobs(params, micro))
    old = np.asarray(micro.old_logp)
    mask = s.rollout.mask & stopped[:, None]
    per_token = -np.asarray(micro.advantages)[:, None] * np.exp(logp - old) * mask
    if loss_type == "grpo":
        want = np.mean(per_token.sum(1) / np.maximum(mask.sum(1), 1))
    else:
        want = per_token.sum() / (n * max_len)
    assert int(stats["loss"].count) == (n if loss_type == "grpo" else n * max_len)
    np.testing.assert_allclose(float(stats["loss"].total) / int(stats["loss"].count), want, rtol=1e-5, atol=1e-7)


def test_a_bucket_that_appears_late_is_a_counted_and_named_compile(pieces, tmp_path, caplog):
    """perf/compiles counts each step's XLA compiles: the first step builds the programs, the
    next reuse them, and prompts padded to a new bucket at step 4 compile again, with a
    warning naming the step and the new shapes."""
    _, tok, _, batch = pieces
    trainer = grpo_job.build_trainer(_config(max_steps=4, save_steps=100), str(tmp_path), tok=tok)
    t = arrays(batch)["input_ids"].shape[1]
    late = next(n for n in range(t + 1, 2 * t) if bucket_size(n) != n)  # a bucket no earlier step used
    grpo = trainer.objective
    rollouts = grpo._rollouts

    def new_bucket_at_step_4(params, batches, step, more):
        if step == 3:
            grpo.bucket_lengths = (late,)
        return rollouts(params, batches, step, more)

    grpo._rollouts = new_bucket_at_step_4
    with caplog.at_level("WARNING", logger="mmjax.train.compiles"):
        trainer.train()
    counts = [r["perf/compiles"] for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]
    assert counts[0] > 0 and counts[1:3] == [0, 0] and counts[3] > 0, counts
    late_warnings = [r.getMessage() for r in caplog.records if r.name == "mmjax.train.compiles"]
    assert late_warnings and all("step 4" in m for m in late_warnings), late_warnings
    assert any(f",{late}]" in m for m in late_warnings), late_warnings  # the new prompt length is named
