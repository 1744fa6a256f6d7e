"""GRPO advantages, losses and config against a plain-numpy restatement of TRL's formulas.

Precision: every test runs under ``jax.enable_x64(True)`` with float64 inputs, so the JAX
functions and the numpy reference agree to ~1e-12; tolerances are 1e-9 (values) and 1e-6
(finite-difference gradients, limited by the difference step, not by the code).

The reference (``trl_loss``) is written from TRL `GRPOTrainer._compute_loss` and
`_generate_and_score_completions` as published (ANCHORS-TRAINING.md section 4): coef_1 =
exp(log importance weight), coef_2 = clamp(coef_1, 1 - eps, 1 + eps_high), TRL's `delta`
clamps coef_1 from above (equal to mmjax's dual clip for delta > 1 + eps_high, which is
what makes it a real cross-check of the dual clip), loss = -min(coef_1 A, coef_2 A) +
beta * KL, then TRL's four normalisations; k1 / k2 follow SPEC 3 (TRL has only k3).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.rl import advantages as adv_lib
from mmjax.rl import grpo, losses, registry
from mmjax.train import weighted

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
LEVELS = ("token", "sequence")
KL_CASES = ((0.0, "k3"), (0.04, "k1"), (0.04, "k2"), (0.04, "k3"))
MAX_LEN = 8  # dr_grpo's max_completion_length: larger than the T=6 bucket, as in a learner
EPS, EPS_HIGH, DUAL = 0.2, 0.28, 1.5


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ---- the numpy reference (TRL's formulas) ----------------------------------------------

def np_kl(logp, ref, estimator):
    d = ref - logp
    return {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[estimator]


def trl_loss(logp, old, ref, adv, mask, *, loss_type, eps=EPS, eps_high=EPS_HIGH, delta=None,
             beta=0.0, kl="k3", level="token", max_len=MAX_LEN):
    """TRL's _compute_loss on one process, one accumulation step: (loss, metrics)."""
    mask = mask.astype(np.float64)
    log_ratio = logp - old
    if level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0))[:, None]
    coef_1 = np.exp(log_w)
    coef_2 = np.clip(coef_1, 1 - eps, 1 + eps_high)
    if delta is not None:
        coef_1 = np.minimum(coef_1, delta)
    a = adv[:, None]
    per_token = -np.minimum(coef_1 * a, coef_2 * a)
    metrics = {}
    if beta != 0.0:
        per_token_kl = np_kl(logp, ref, kl)
        per_token = per_token + beta * per_token_kl
    rows = logp.shape[0]
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / max(mask.sum(), 1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (rows * max_len)
    else:  # dapo: num_items_in_batch = active tokens of the (here: only) step, one process
        loss = (per_token * mask).sum() / mask.sum()

    def masked_batch_mean(x):
        return x.mean() if x.shape[1] == 1 else (x * mask).sum() / max(mask.sum(), 1.0)

    if beta != 0.0:
        metrics["kl"] = masked_batch_mean(per_token_kl)
    low = (coef_1 < 1 - eps) & (a < 0)
    high = (coef_1 > 1 + eps_high) & (a > 0)
    metrics["clip_ratio/low_mean"] = masked_batch_mean(low.astype(np.float64))
    metrics["clip_ratio/high_mean"] = masked_batch_mean(high.astype(np.float64))
    metrics["clip_ratio/region_mean"] = masked_batch_mean((low | high).astype(np.float64))
    return loss, metrics


# ---- fixed random batch: 8 prompts x G=2, T=6, lengths 1..6 -----------------------------

LENGTHS = np.array([6, 3, 1, 5, 2, 6, 4, 3, 2, 6, 5, 1, 4, 3, 6, 2])
ROWS = len(LENGTHS)


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    b, t = len(LENGTHS), 6
    mask = (np.arange(t)[None, :] < LENGTHS[:, None]).astype(np.int32)
    logp = -rng.uniform(0.05, 3.0, (b, t))
    # Token and row-level noise: token ratios and the rows' mean ratios (GSPO) both fall
    # outside [1 - 0.2, 1 + 0.28] and beyond the dual clip (test_fixture_exercises_every_branch).
    old = logp + rng.normal(0.0, 0.5, (b, t)) + rng.normal(0.0, 0.5, (b, 1))
    ref = logp + rng.normal(0.0, 0.5, (b, t))
    adv = rng.normal(0.0, 1.0, b)
    return logp, old, ref, adv, mask


def jax_loss(logp, old, ref, adv, mask, **kw):
    opts = dict(epsilon=EPS, epsilon_high=EPS_HIGH, max_completion_length=MAX_LEN)
    opts.update(kw)
    return losses.policy_loss(jnp.asarray(logp), None if old is None else jnp.asarray(old), jnp.asarray(adv),
                              jnp.asarray(mask), ref_logp=None if ref is None else jnp.asarray(ref), **opts)


@pytest.mark.parametrize("delta", [None, DUAL])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("beta,kl", KL_CASES)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_metrics_match_trl_reference(loss_type, beta, kl, level, delta):
    logp, old, ref, adv, mask = make_batch()
    out = jax_loss(logp, old, ref, adv, mask, loss_type=loss_type, beta=beta, kl_estimator=kl,
                   importance_sampling_level=level, delta=delta)
    want, want_metrics = trl_loss(logp, old, ref, adv, mask, loss_type=loss_type, beta=beta, kl=kl,
                                  level=level, delta=delta)
    np.testing.assert_allclose(out.loss.value(), want, rtol=1e-9, atol=1e-12)
    got_metrics = weighted.finalize(out.metrics)
    assert sorted(got_metrics) == sorted(want_metrics)
    for name, value in want_metrics.items():
        np.testing.assert_allclose(got_metrics[name], value, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixture_exercises_every_branch(seed):
    # The comparisons with the reference are only meaningful if the batches they use hit
    # both clip sides and the dual clip at both levels, and the row lengths matter.
    logp, old, ref, adv, mask = make_batch(seed)
    for level in LEVELS:
        m = weighted.finalize(jax_loss(logp, old, ref, adv, mask, loss_type="dapo",
                                     importance_sampling_level=level).metrics)
        assert m["clip_ratio/low_mean"] > 0 and m["clip_ratio/high_mean"] > 0, level
        plain = jax_loss(logp, old, ref, adv, mask, loss_type="dapo", importance_sampling_level=level)
        dual = jax_loss(logp, old, ref, adv, mask, loss_type="dapo", importance_sampling_level=level, delta=DUAL)
        assert float(dual.loss.value()) < float(plain.loss.value()) - 1e-3, level
    grpo_v = jax_loss(logp, old, ref, adv, mask, loss_type="grpo").loss.value()
    dapo_v = jax_loss(logp, old, ref, adv, mask, loss_type="dapo").loss.value()
    assert abs(float(grpo_v) - float(dapo_v)) > 1e-3


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_matches_finite_differences_of_trl_reference(loss_type, level):
    # GSPO's gradient flows through the row's mean log-ratio (TRL "sequence"); the finite
    # differences of TRL's formula check that, and the per-token case, with KL and dual clip.
    logp, old, ref, adv, mask = make_batch(seed=1)
    kw = dict(loss_type=loss_type, beta=0.04, importance_sampling_level=level, delta=DUAL)

    def f(lp):
        return jax_loss(lp, old, ref, adv, mask, kl_estimator="k3", **kw).loss.value()

    grad = np.asarray(jax.grad(f)(jnp.asarray(logp)))
    h = 1e-6
    fd = np.zeros_like(logp)
    for i, j in zip(*np.nonzero(np.ones_like(logp))):
        up, down = logp.copy(), logp.copy()
        up[i, j] += h
        down[i, j] -= h
        ref_kw = dict(loss_type=loss_type, beta=0.04, kl="k3", level=level, delta=DUAL)
        fd[i, j] = (trl_loss(up, old, ref, adv, mask, **ref_kw)[0]
                    - trl_loss(down, old, ref, adv, mask, **ref_kw)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    assert np.all(grad[mask == 0] == 0)
    assert np.abs(grad).max() > 1e-3


# ---- a hand-computed example -----------------------------------------------------------
#
# 2 prompts x G=2, advantages given: A = [+1, -1, +2, -2]; epsilon 0.2 both sides, beta 0.
# log_ratio = log(ratio), ratios per token (| = end of the row's mask):
#   row 0, A=+1: 1.0, 1.1, 1.5 |      loss = -min(rA, clip(r)A)     -> -1.0, -1.1, -1.2 (clip 1.2)
#   row 1, A=-1: 0.7, 1.5 |           loss = max(r|A|, clip(r)|A|)  ->  0.8 (clip), 1.5
#   row 2, A=+2: 0.5, 1.0 |                                         -> -1.0, -2.0
#   row 3, A=-2: 1.0, 4.0, 1.1 |                                    ->  2.0, 8.0, 2.2
#                dual clip c=3 caps the 8.0 at -c*A = 6.0
# row sums: -3.3, 2.3, -3.0, 12.2 (10.2 dual); lengths 3, 2, 2, 3; 10 tokens, 4 rows.
# grpo = (-3.3/3 + 2.3/2 - 3.0/2 + 12.2/3) / 4 = (-1.1 + 1.15 - 1.5 + 4.0667) / 4 = 2.61667 / 4
#      = 0.654167;  dual: (-1.1 + 1.15 - 1.5 + 3.4) / 4 = 1.95 / 4 = 0.4875
# dapo = (-3.3 + 2.3 - 3.0 + 12.2) / 10 = 0.82;  dual: 6.2 / 10 = 0.62
# clip_ratio: low = {row 1: 0.7 < 0.8 with A<0} = 1/10, high = {row 0: 1.5 > 1.2 with A>0}
# = 1/10, region 2/10 (row 2's 0.5 has A>0 and row 3's 4.0 has A<0: not clipped).
# Gradients (d loss / d logp = d loss / d log r; unclipped -rA terms give -rA):
#   grpo: [0,0]: -1*1/(3 rows-len * 4 rows) = -1/12; [0,2]: clipped, 0; [1,0]: clipped, 0;
#         [1,1]: 1.5/(2*4) = 0.1875; [3,1]: 2*4/(3*4) = 2/3, with the dual clip 0.
#   dapo: [1,1]: 1.5/10 = 0.15; [3,1]: 8/10 = 0.8.

HAND_RATIOS = np.array([[1.0, 1.1, 1.5], [0.7, 1.5, 1.0], [0.5, 1.0, 1.0], [1.0, 4.0, 1.1]])
HAND_MASK = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 1]])
HAND_ADV = np.array([1.0, -1.0, 2.0, -2.0])


@pytest.mark.parametrize("loss_type,delta,value,count,grads", [
    ("grpo", None, 2.61666666666666 / 4, 4, {(0, 0): -1 / 12, (0, 2): 0.0, (1, 0): 0.0, (1, 1): 0.1875,
                                              (3, 1): 2 / 3}),
    ("grpo", 3.0, 0.4875, 4, {(1, 1): 0.1875, (3, 1): 0.0}),
    ("dapo", None, 0.82, 10, {(1, 1): 0.15, (3, 1): 0.8}),
    ("dapo", 3.0, 0.62, 10, {(3, 1): 0.0}),
])
def test_hand_computed_example(loss_type, delta, value, count, grads):
    old = np.full(HAND_RATIOS.shape, -1.0)
    logp = old + np.log(HAND_RATIOS)

    def f(lp):
        out = jax_loss(lp, old, None, HAND_ADV, HAND_MASK, loss_type=loss_type, epsilon=0.2,
                       epsilon_high=0.2, delta=delta)
        return out.loss.value(), out

    (loss, out), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logp))
    np.testing.assert_allclose(loss, value, rtol=1e-12)
    assert int(out.loss.count) == count
    m = weighted.finalize(out.metrics)
    np.testing.assert_allclose([m["clip_ratio/low_mean"], m["clip_ratio/high_mean"], m["clip_ratio/region_mean"]],
                               [0.1, 0.1, 0.2], rtol=1e-12)
    for (i, j), g in grads.items():
        np.testing.assert_allclose(grad[i, j], g, atol=1e-12, err_msg=f"d loss / d logp[{i},{j}]")


# ---- exact accumulation ------------------------------------------------------------------

SPLITS = ((0, 5), (5, 6), (6, 11), (11, 16))  # four micro-batches of unequal size: 5, 1, 5, 5 rows


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_sum_to_the_full_batch(loss_type, level):
    logp, old, ref, adv, mask = make_batch(seed=2)
    kw = dict(loss_type=loss_type, beta=0.04, kl_estimator="k3", importance_sampling_level=level, delta=DUAL)

    def numerator(lp, rows):
        a, b = rows
        out = jax_loss(lp, old[a:b], ref[a:b], adv[a:b], mask[a:b], **kw)
        return out.loss.total, out

    full_grad, full = jax.grad(numerator, has_aux=True)(jnp.asarray(logp), (0, ROWS))
    full_grad = full_grad / full.loss.count

    total, grads = None, []
    for a, b in SPLITS:
        g, out = jax.grad(numerator, has_aux=True)(jnp.asarray(logp[a:b]), (a, b))
        total = out if total is None else weighted.accumulate(total, out)
        grads.append(g)
    micro_grad = jnp.concatenate(grads) / total.loss.count

    np.testing.assert_allclose(total.loss.value(), full.loss.value(), rtol=1e-12)
    assert int(total.loss.count) == int(full.loss.count)
    np.testing.assert_allclose(micro_grad, full_grad, atol=1e-12)
    for name, w in full.metrics.items():
        np.testing.assert_allclose(total.metrics[name].value(), w.value(), rtol=1e-12, err_msg=name)
    # The same micro-batches averaged per micro-batch (TRL's bnpo) give another number: the
    # test above would see a mis-scaled accumulation.
    if loss_type in ("bnpo", "dapo"):
        per_micro = [jax_loss(logp[a:b], old[a:b], ref[a:b], adv[a:b], mask[a:b], **kw).loss.value()
                     for a, b in SPLITS]
        assert abs(float(np.mean(per_micro)) - float(full.loss.value())) > 1e-3


def test_matches_trl_reference_on_the_whole_step_when_split():
    # dapo's denominator is the whole step's token count (TRL's num_items_in_batch with
    # steps_per_generation == gradient_accumulation_steps): accumulated = TRL's full batch.
    logp, old, ref, adv, mask = make_batch(seed=3)
    total = None
    for a, b in SPLITS:
        out = jax_loss(logp[a:b], old[a:b], ref[a:b], adv[a:b], mask[a:b], loss_type="dapo")
        total = out if total is None else weighted.accumulate(total, out)
    np.testing.assert_allclose(total.loss.value(), trl_loss(logp, old, ref, adv, mask, loss_type="dapo")[0],
                               rtol=1e-12)


# ---- rows, masks, edge cases ---------------------------------------------------------------

def test_empty_rows_do_not_count_by_default_and_row_mask_restores_trl():
    logp, old, ref, adv, mask = make_batch(seed=4)
    mask = mask.copy()
    mask[2] = 0  # e.g. a padding row, or a truncated row masked by mask_truncated_completions
    for loss_type in ("grpo", "dr_grpo"):
        default = jax_loss(logp, old, ref, adv, mask, loss_type=loss_type)
        assert int(default.loss.count) == (ROWS - 1) * (MAX_LEN if loss_type == "dr_grpo" else 1)
        trl_rows = jax_loss(logp, old, ref, adv, mask, loss_type=loss_type, row_mask=np.ones(ROWS, bool))
        np.testing.assert_allclose(trl_rows.loss.value(), trl_loss(logp, old, ref, adv, mask, loss_type=loss_type)[0],
                                   rtol=1e-12)
        np.testing.assert_allclose(default.loss.value() * (ROWS - 1), trl_rows.loss.value() * ROWS, rtol=1e-12)
    # A False row of row_mask is dropped with its tokens, as if it were not in the batch.
    keep = np.arange(ROWS) != 5
    dropped = jax_loss(logp, old, ref, adv, mask, loss_type="dapo", row_mask=keep)
    without = jax_loss(logp[keep], old[keep], ref[keep], adv[keep], mask[keep], loss_type="dapo")
    np.testing.assert_allclose(dropped.loss.value(), without.loss.value(), rtol=1e-12)
    assert int(dropped.loss.count) == int(without.loss.count)


def test_mask_truncated_completions_zeroes_truncated_rows():
    mask = jnp.ones((3, 4), jnp.int32)
    got = losses.mask_truncated_completions(mask, jnp.array([False, True, False]))
    np.testing.assert_array_equal(got, [[1] * 4, [0] * 4, [1] * 4])


def test_garbage_in_masked_positions_reaches_neither_values_nor_gradients():
    logp, old, ref, adv, mask = make_batch(seed=5)
    dirty = [x.copy() for x in (logp, old, ref)]
    dirty[0][mask == 0] = -np.inf
    dirty[1][mask == 0] = np.nan
    dirty[2][mask == 0] = np.inf
    for level in LEVELS:
        kw = dict(loss_type="grpo", beta=0.04, importance_sampling_level=level, delta=DUAL)

        def f(lp, o, r):
            return jax_loss(lp, o, r, adv, mask, **kw).loss.value()

        clean_v, clean_g = jax.value_and_grad(f)(jnp.asarray(logp), old, ref)
        dirty_v, dirty_g = jax.value_and_grad(f)(jnp.asarray(dirty[0]), dirty[1], dirty[2])
        np.testing.assert_allclose(dirty_v, clean_v, rtol=1e-12)
        assert np.all(np.isfinite(dirty_g))
        np.testing.assert_allclose(dirty_g, clean_g, atol=1e-15)


def test_log_ratio_is_clipped_to_20_before_exp():
    logp = np.array([[-1.0, -2.0]])
    mask = np.ones((1, 2), np.int32)
    huge = jax_loss(logp, logp - 100.0, None, np.array([-1.0]), mask, loss_type="dapo")
    at_20 = jax_loss(logp, logp - 20.0, None, np.array([-1.0]), mask, loss_type="dapo")
    assert np.isfinite(float(huge.loss.value()))
    np.testing.assert_allclose(huge.loss.value(), at_20.loss.value(), rtol=1e-12)
    np.testing.assert_allclose(at_20.loss.value(), np.exp(20.0), rtol=1e-12)


def test_beta_zero_needs_no_reference_and_logs_no_kl():
    logp, old, _, adv, mask = make_batch(seed=6)
    out = jax_loss(logp, old, None, adv, mask, loss_type="grpo", beta=0.0)
    assert "kl" not in out.metrics
    np.testing.assert_allclose(out.loss.value(), trl_loss(logp, old, None, adv, mask, loss_type="grpo")[0],
                               rtol=1e-12)
    with pytest.raises(ValueError, match="ref_logp"):
        jax_loss(logp, old, None, adv, mask, loss_type="grpo", beta=0.04)


def test_old_logp_none_is_on_policy():
    # mu = 1 without sampler log-probs: ratio 1, loss = -A per token, gradient -A / tokens.
    logp, _, _, adv, mask = make_batch(seed=7)

    def f(lp):
        return jax_loss(lp, None, None, adv, mask, loss_type="dapo").loss.value()

    value, grad = jax.value_and_grad(f)(jnp.asarray(logp))
    tokens = mask.sum()
    np.testing.assert_allclose(value, -(adv[:, None] * mask).sum() / tokens, rtol=1e-12)
    np.testing.assert_allclose(grad, -adv[:, None] * mask / tokens, atol=1e-15)


def test_token_level_advantages_broadcast_the_same_as_per_row():
    logp, old, ref, adv, mask = make_batch(seed=8)
    per_row = jax_loss(logp, old, ref, adv, mask, loss_type="grpo", delta=DUAL)
    per_token = jax_loss(logp, old, ref, np.repeat(adv[:, None], 6, axis=1), mask, loss_type="grpo", delta=DUAL)
    np.testing.assert_allclose(per_token.loss.value(), per_row.loss.value(), rtol=1e-12)


def test_bfloat16_inputs_are_computed_in_float32_and_jit_agrees():
    logp, old, ref, adv, mask = make_batch(seed=9)
    with jax.enable_x64(False):
        lp16, old16 = (jnp.asarray(x, jnp.bfloat16) for x in (logp, old))
        out = losses.policy_loss(lp16, old16, jnp.asarray(adv, jnp.float32), jnp.asarray(mask), loss_type="grpo")
        assert out.loss.total.dtype == jnp.float32 and out.loss.count.dtype == jnp.int32
        fn = jax.jit(functools.partial(losses.policy_loss, loss_type="grpo"))
        jitted = fn(lp16, old16, jnp.asarray(adv, jnp.float32), jnp.asarray(mask))
        np.testing.assert_allclose(jitted.loss.value(), out.loss.value(), rtol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss_type="token_mean"), "loss_agg 'token_mean'.*'dapo'"),
    (dict(importance_sampling_level="seq"), "importance_sampling_level='seq'"),
    (dict(delta=1.1), "delta=1.1"),
    (dict(loss_type="dr_grpo", max_completion_length=None), "max_completion_length"),
    (dict(loss_type="dr_grpo", max_completion_length=4), "6 tokens wide, more than max_completion_length=4"),
    (dict(beta=0.04, kl_estimator="k4"), "kl 'k4'"),
])
def test_loss_option_errors_name_the_knob(kwargs, match):
    logp, old, ref, adv, mask = make_batch()
    with pytest.raises(ValueError, match=match):
        jax_loss(logp, old, ref, adv, mask, **kwargs)


def test_shape_errors_name_the_tensor():
    logp, old, ref, adv, mask = make_batch()
    with pytest.raises(ValueError, match="old_logp"):
        jax_loss(logp, old[:, :3], ref, adv, mask)
    with pytest.raises(ValueError, match="advantages"):
        jax_loss(logp, old, ref, adv[:3], mask)
    with pytest.raises(ValueError, match="row_mask"):
        jax_loss(logp, old, ref, adv, mask, row_mask=np.ones(3, bool))


# ---- advantages ------------------------------------------------------------------------------

def np_advantages(rewards, g, mode):
    grouped = rewards.reshape(-1, g)
    centred = (grouped - grouped.mean(1, keepdims=True)).reshape(-1)
    if mode == "none":
        return centred
    std = np.repeat(grouped.std(1, ddof=1), g) if mode == "group" else rewards.std(ddof=1)
    return centred / (std + 1e-4)


@pytest.mark.parametrize("mode", adv_lib.SCALE_REWARDS)
def test_advantages_match_numpy_with_unbiased_std(mode):
    rng = np.random.default_rng(10)
    rewards = rng.normal(size=4 * 5)
    rewards[5:10] = 0.1  # an all-equal group (0.1 is not exact in binary: mean != 0.1)
    got = np.asarray(adv_lib.compute_advantages(jnp.asarray(rewards), 5, mode))
    np.testing.assert_allclose(got, np_advantages(rewards, 5, mode), rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(got))
    assert np.all(got[5:10] == 0.0)  # exactly: no signal, no NaN, no 1e-13 residue
    if mode == "group":  # ddof=1 matters: ddof=0 would give a different scale
        biased = (rewards[:5] - rewards[:5].mean()) / (rewards[:5].std() + 1e-4)
        assert not np.allclose(got[:5], biased)


def test_all_equal_rewards_everywhere_and_single_generation_give_zero():
    flat = jnp.full((6,), 0.7)
    for mode in adv_lib.SCALE_REWARDS:
        np.testing.assert_array_equal(adv_lib.compute_advantages(flat, 3, mode), np.zeros(6))
        np.testing.assert_array_equal(adv_lib.compute_advantages(jnp.arange(4.0), 1, mode), np.zeros(4))
    np.testing.assert_array_equal(adv_lib.compute_advantages(jnp.array([2.0]), 1, "batch"), [0.0])


def test_advantages_layout_is_prompt_major_and_checked():
    rewards = jnp.array([1.0, 0.0, 3.0, 1.0])  # prompt 0: rows 0-1, prompt 1: rows 2-3
    got = adv_lib.compute_advantages(rewards, 2, "none")
    np.testing.assert_allclose(got, [0.5, -0.5, 1.0, -1.0])
    with pytest.raises(ValueError, match="not a multiple of num_generations=3"):
        adv_lib.compute_advantages(rewards, 3)
    with pytest.raises(ValueError, match="1-D"):
        adv_lib.compute_advantages(rewards.reshape(2, 2), 2)
    with pytest.raises(ValueError, match="advantage 'mean'.*'group'"):
        adv_lib.compute_advantages(rewards, 2, "mean")


def test_frac_reward_zero_std():
    rewards = jnp.array([1.0, 1.0, 0.0, 1.0, 0.3, 0.3])
    w = adv_lib.frac_reward_zero_std(rewards, 2)
    assert (int(w.total), int(w.count)) == (2, 3)
    np.testing.assert_allclose(w.value(), 2 / 3)


# ---- config ----------------------------------------------------------------------------------

TRL_DEFAULTS = dict(num_generations=8, temperature=1.0, top_p=1.0, top_k=0, max_completion_length=256, beta=0.0,
                    epsilon=0.2, epsilon_high=None, delta=None, loss_type="dapo", scale_rewards="group",
                    importance_sampling_level="token", num_iterations=1, mask_truncated_completions=False)


def test_config_defaults_are_trls_and_every_field_has_help():
    cfg = grpo.GRPOConfig()
    for name, value in TRL_DEFAULTS.items():
        assert getattr(cfg, name) == value, name
    assert cfg.kl_estimator == "k3" and cfg.clip_high == 0.2
    for field in grpo.dataclasses.fields(cfg):
        assert field.metadata.get("help"), field.name
    with pytest.raises(grpo.dataclasses.FrozenInstanceError):
        cfg.beta = 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_generations=1), r"num_generations=1: must be an int >= 2"),
    (dict(temperature=0.0), r"temperature=0.0"),
    (dict(top_p=0.0), r"top_p=0.0"),
    (dict(top_k=-1), r"top_k=-1"),
    (dict(max_completion_length=0), r"max_completion_length=0"),
    (dict(beta=-0.1), r"beta=-0.1"),
    (dict(kl_estimator="kl"), r"kl_estimator='kl': expected one of \('k1', 'k2', 'k3'\)"),
    (dict(epsilon=1.0), r"epsilon=1.0"),
    (dict(epsilon_high=-0.1), r"epsilon_high=-0.1"),
    (dict(delta=1.2, epsilon_high=0.28), r"delta=1.2: .* > 1 \+ epsilon_high = 1.28"),
    (dict(loss_type="token-mean"), r"loss_type='token-mean': expected one of \('bnpo', 'dapo', 'dr_grpo', 'grpo'\)"),
    (dict(scale_rewards=True), r"scale_rewards=True: expected one of \('batch', 'group', 'none'\)"),
    (dict(importance_sampling_level="seq"), r"importance_sampling_level='seq'"),
    (dict(num_iterations=0), r"num_iterations=0"),
    (dict(mask_truncated_completions=1), r"mask_truncated_completions=1"),
])
def test_config_validation_names_field_and_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grpo.GRPOConfig(**kwargs)


def test_config_reports_every_bad_field_at_once():
    with pytest.raises(ValueError, match="num_generations.*loss_type"):
        grpo.GRPOConfig(num_generations=0, loss_type="x")


def test_sequence_level_with_token_mean_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="mmjax.rl.grpo"):
        grpo.GRPOConfig(importance_sampling_level="sequence", loss_type="dapo")
    assert "length" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mmjax.rl.grpo"):
        grpo.GRPOConfig(importance_sampling_level="sequence", loss_type="grpo")
    assert caplog.text == ""


def test_presets_follow_the_spec():
    jigsaw = grpo.GRPOConfig(**grpo.GRPO_PRESETS["jigsaw"])  # SPEC 1.6
    assert (jigsaw.num_generations, jigsaw.beta, jigsaw.delta, jigsaw.loss_type, jigsaw.max_completion_length) == (
        16, 0.0, 3.0, "dapo", 2048)
    difficulty = grpo.GRPOConfig(**grpo.GRPO_PRESETS["difficulty"])  # SPEC 2.4
    assert (difficulty.num_generations, difficulty.beta, difficulty.max_completion_length) == (8, 0.001, 1024)


def test_config_wires_into_the_loss_and_advantages():
    logp, old, ref, adv, mask = make_batch(seed=11)
    cfg = grpo.GRPOConfig(num_generations=2, loss_type="dr_grpo", beta=0.04, kl_estimator="k2",
                          epsilon_high=EPS_HIGH, delta=DUAL, importance_sampling_level="sequence",
                          max_completion_length=MAX_LEN)
    via_cfg = grpo.loss(cfg, jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                        ref_logp=jnp.asarray(ref))
    want, _ = trl_loss(logp, old, ref, adv, mask, loss_type="dr_grpo", beta=0.04, kl="k2", level="sequence",
                       delta=DUAL)
    np.testing.assert_allclose(via_cfg.loss.value(), want, rtol=1e-9)
    rewards = jnp.array([1.0, 0.0, 0.5, 0.5])
    np.testing.assert_allclose(grpo.advantages(cfg, rewards), np_advantages(np.asarray(rewards), 2, "group"))


def test_registry_lists_and_guards_names():
    assert registry.names("loss_agg") == ("bnpo", "dapo", "dr_grpo", "grpo")
    assert registry.names("advantage") == ("batch", "group", "none")
    assert registry.names("kl") == ("k1", "k2", "k3")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("kl", "k3")(lambda logp, ref: logp)
    with pytest.raises(ValueError, match="unknown registry kind"):
        registry.get("optimizer", "adam")
