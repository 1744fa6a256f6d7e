"""The GRPO policy loss as exact (sum, count) pairs, pure JAX, knob names from TRL.

    out = policy_loss(logp, old_logp, advantages, completion_mask,
                      loss_type="dapo", epsilon=0.2, beta=0.0)
    out.loss      -> Weighted(total, count): the loss is total / count
    out.metrics   -> {"clip_ratio/low_mean": Weighted, ..., "kl": Weighted (beta > 0)}

Nothing here divides. Every numerator and denominator is a sum over rows (denominators are
int32 counts, so they add up exactly): summing the numerators, and separately the
denominators, over the micro-batches and data-parallel shards of one optimizer step gives
the full-batch loss for every loss_type. Gradients likewise: sum the numerators'
gradients, divide once by the summed denominator (as Tunix's GradientAccumulator does).
TRL's dapo instead divides by the token count of the whole generation batch, which
mis-scales the step when steps_per_generation differs from gradient_accumulation_steps
(TRL PR #6024, issue #5619); each aggregation function says how it compares with TRL.

The per-token formulas, masking and metrics are on `policy_loss`. Sources: TRL
`GRPOTrainer._compute_loss` (ANCHORS-TRAINING section 4) and Tunix
`algo_core.grpo_loss_fn` (section 1); the knobs: README "Training with GRPO".
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mmjax.rl import registry
from mmjax.train.weighted import Weighted

LOG_RATIO_CLIP = 20.0  # Tunix algo_core: clip(logp - old_logp, -20, 20) before exp
LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
KL_ESTIMATORS = ("k1", "k2", "k3")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
METRIC_NAMES = ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "kl")


class LossOutput(NamedTuple):
    loss: Weighted
    metrics: dict[str, Weighted]


def mask_truncated_completions(completion_mask: jax.Array, truncated: jax.Array) -> jax.Array:
    """TRL's `mask_truncated_completions`: zero the mask of rows that hit the length limit.

    Pass ``row_mask`` = the real rows to ``policy_loss`` as well if the masked rows should
    still count in the grpo / dr_grpo row denominators, as in TRL.
    """
    return completion_mask * ~jnp.asarray(truncated, bool)[:, None]


# ---- KL estimators -------------------------------------------------------------------

@registry.register("kl", "k1")
def kl_k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """logp - ref_logp (Tunix "kl")."""
    return logp - ref_logp


@registry.register("kl", "k2")
def kl_k2(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """0.5 (logp - ref_logp)^2 (Tunix "mse_kl")."""
    return 0.5 * jnp.square(logp - ref_logp)


@registry.register("kl", "k3")
def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """exp(ref - logp) - (ref - logp) - 1 (TRL's only estimator; Tunix "low_var_kl")."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


# ---- aggregation: per-token loss -> (numerator, denominator) ---------------------------

def _row_count(row_mask: jax.Array) -> jax.Array:
    return jnp.sum(row_mask, dtype=jnp.int32)


@registry.register("loss_agg", "grpo")
def aggregate_grpo(per_token: jax.Array, mask: jax.Array, row_mask: jax.Array,
                   max_completion_length: int | None = None) -> Weighted:
    """(sum of per-row token means, number of rows).

    TRL divides per micro-batch and then by the accumulation steps: equal to this when every
    micro-batch has the same number of rows (TRL's case).
    """
    lengths = jnp.sum(mask, axis=-1)
    row_means = jnp.sum(per_token * mask, axis=-1) / jnp.maximum(lengths, 1)
    return Weighted(jnp.sum(jnp.where(row_mask, row_means, 0)), _row_count(row_mask))


@registry.register("loss_agg", "bnpo")
@registry.register("loss_agg", "dapo")
def aggregate_token_mean(per_token: jax.Array, mask: jax.Array, row_mask: jax.Array,
                         max_completion_length: int | None = None) -> Weighted:
    """(sum over active tokens, number of active tokens): the token mean of the whole step.

    bnpo: TRL averages per-micro-batch token means; mmjax's bnpo is the token mean of the
    whole step, identical to mmjax's dapo (the two names are kept for TRL configs).
    dapo: TRL divides by the active-token count of the whole *generation* batch
    (`num_items_in_batch`), which mis-scales the step when steps_per_generation differs
    from gradient_accumulation_steps (TRL PR #6024, issue #5619). Summing (sum, count)
    over exactly the micro-batches of one step gives that step's token mean.
    """
    return Weighted(jnp.sum(per_token * mask), jnp.sum(mask, dtype=jnp.int32))


@registry.register("loss_agg", "dr_grpo")
def aggregate_dr_grpo(per_token: jax.Array, mask: jax.Array, row_mask: jax.Array,
                      max_completion_length: int | None = None) -> Weighted:
    """(sum over active tokens, rows * max_completion_length).

    TRL divides per micro-batch and then by the accumulation steps: equal to this when every
    micro-batch has the same number of rows (TRL's case).
    """
    if not isinstance(max_completion_length, int) or max_completion_length < 1:
        raise ValueError("loss_type='dr_grpo' needs max_completion_length, the static int the "
                         f"sum is normalised by (TRL GRPOConfig.max_completion_length); got {max_completion_length!r}")
    if per_token.shape[-1] > max_completion_length:
        raise ValueError(f"completions are {per_token.shape[-1]} tokens wide, more than max_completion_length="
                         f"{max_completion_length}: dr_grpo's normaliser would undercount (logp must hold the "
                         "completion tokens only)")
    return Weighted(jnp.sum(per_token * mask), _row_count(row_mask) * jnp.int32(max_completion_length))


# ---- the loss ----------------------------------------------------------------------------

def _float_dtype(*arrays) -> jnp.dtype:
    dtype = jnp.float32
    for a in arrays:
        if a is not None and jnp.issubdtype(a.dtype, jnp.floating):
            dtype = jnp.promote_types(dtype, a.dtype)
    return dtype


def _check_shapes(logp, old_logp, ref_logp, advantages, completion_mask, row_mask) -> None:
    if logp.ndim != 2:
        raise ValueError(f"logp must be [B, T] (completion tokens), got shape {logp.shape}")
    for name, a in (("old_logp", old_logp), ("ref_logp", ref_logp), ("completion_mask", completion_mask)):
        if a is not None and a.shape != logp.shape:
            raise ValueError(f"{name} has shape {a.shape}, logp has {logp.shape}: they must match")
    if advantages.shape not in ((logp.shape[0],), logp.shape):
        raise ValueError(f"advantages must be [B] = ({logp.shape[0]},) or [B, T] = {logp.shape}, "
                         f"got {advantages.shape}")
    if row_mask is not None and row_mask.shape != (logp.shape[0],):
        raise ValueError(f"row_mask must be [B] = ({logp.shape[0]},), got {row_mask.shape}")


def _check_options(loss_type, epsilon, epsilon_high, delta, beta, kl_estimator,
                   importance_sampling_level, ref_logp) -> None:
    registry.get("loss_agg", loss_type)  # raises with the allowed names
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level={importance_sampling_level!r}: expected one of "
                         f"{IMPORTANCE_SAMPLING_LEVELS}")
    if not 0.0 <= epsilon < 1.0 or not epsilon_high >= 0.0:
        raise ValueError(f"epsilon={epsilon} must be in [0, 1) and epsilon_high={epsilon_high} >= 0")
    if delta is not None and not delta > 1.0 + epsilon_high:
        raise ValueError(f"delta={delta} (dual clip) must be > 1 + epsilon_high = {1.0 + epsilon_high}")
    if not beta >= 0.0:
        raise ValueError(f"beta={beta} must be >= 0")
    if beta > 0.0:
        registry.get("kl", kl_estimator)
        if ref_logp is None:
            raise ValueError(f"beta={beta} > 0 needs ref_logp (the reference policy's log-probs); "
                             "beta=0 runs without a reference model")


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array | None,
    advantages: jax.Array,
    completion_mask: jax.Array,
    *,
    ref_logp: jax.Array | None = None,
    row_mask: jax.Array | None = None,
    loss_type: str = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
) -> LossOutput:
    """GRPO clipped-surrogate loss (+ beta KL) as (sum, count), never divided here.

    Per token, A the advantage (TRL `GRPOTrainer._compute_loss`, ANCHORS-TRAINING
    section 4; Tunix `algo_core.grpo_loss_fn`, section 1):
        log_ratio  = clip(logp - old_logp, -20, 20)      (Tunix clips before exp; TRL does not.
                                                          |log_ratio| < 20 gives TRL's numbers;
                                                          beyond, exp would overflow to inf in
                                                          float32 around 88, and the clip also
                                                          stops that token's gradient.)
        importance_sampling_level "token":    w = log_ratio
                                  "sequence": w = sum_t(log_ratio * mask) / max(len, 1) per row,
                                              broadcast over its tokens (GSPO). As in TRL the
                                              gradient flows through that mean, so d/d logp_t
                                              of row i is the sequence term / len_i.
        ratio      = exp(w)
        pg         = max(-ratio * A, -clip(ratio, 1 - epsilon, 1 + epsilon_high) * A)
                     = -min(ratio * A, clip(...) * A)     (the clipped surrogate)
        delta (dual clip c, Tunix `epsilon_c`, Ye et al. 2020): where A < 0,
                     pg = min(pg, -delta * A). For delta > 1 + epsilon_high this is the same
                     value and gradient as TRL's `delta` (INTELLECT-2 two-sided clipping,
                     coef_1 = min(ratio, delta)): for A < 0 both cap the loss at -delta * A,
                     for A > 0 TRL's cap never binds. mmjax requires delta > 1 + epsilon_high.
        per_token  = pg + beta * kl_estimator(logp, ref_logp)   (TRL adds beta * k3 per token)

    KL estimators (with d = ref_logp - logp, samples from the policy):
        k1 = logp - ref_logp = -d      k2 = 0.5 * d**2      k3 = exp(d) - d - 1
    TRL uses k3 only; Tunix names them kl / mse_kl / low_var_kl. No clamp (TRL has none).
    beta = 0: no KL term, ``ref_logp`` may be None, no "kl" metric.

    Aggregation (``loss_type``) -> (numerator, denominator), never divided here:
        "grpo":       sum over rows of (sum_t per_token * mask) / max(len_row, 1),
                      / number of rows                       (mean per sequence, then mean)
        "bnpo","dapo": sum over tokens / number of active tokens          (token mean)
        "dr_grpo":    sum over tokens / (number of rows * max_completion_length)

    Inputs are computed in at least float32 (bfloat16 log-probs are upcast). Positions where
    the mask is 0 may hold anything, -inf or NaN included: they are replaced before any
    arithmetic, so they reach neither the values nor the gradients.

    Args:
      logp: [B, T] log-probs of the completion tokens only (T may be a padded bucket <=
        max_completion_length) under the policy being trained (the only differentiable input).
      old_logp: [B, T] log-probs under the policy that sampled (num_iterations > 1) or the
        sampler's own log-probs; None means on-policy: stop_gradient(logp), ratio 1 (TRL).
      advantages: [B] (one per completion, broadcast over its tokens) or [B, T]; constants.
      completion_mask: [B, T], nonzero = the token counts.
      ref_logp: [B, T] reference-policy log-probs; needed only when beta > 0.
      row_mask: [B] rows that count: the "rows" of the grpo / dr_grpo denominators. Default:
        the rows with at least one active token, so padding rows (all-zero mask) added to
        fill a bucket or a shard count nowhere. TRL divides by every row of the local batch,
        including rows whose mask `mask_truncated_completions` zeroed: pass ``row_mask`` =
        the real rows to reproduce that (then such a row adds 0 to the numerator and 1 to
        the row count). A False row is excluded entirely (its tokens are masked too).
      loss_type, epsilon, epsilon_high (None = epsilon), delta, beta, kl_estimator,
      importance_sampling_level, max_completion_length: TRL GRPOConfig knobs (static);
        max_completion_length is required by "dr_grpo".
    Returns:
      LossOutput(loss=Weighted, metrics={name: Weighted}). Metrics (TRL names), each a
      (sum, count) pair that accumulates like the loss:
        clip_ratio/low_mean     ratio < 1 - epsilon and A < 0
        clip_ratio/high_mean    ratio > 1 + epsilon_high and A > 0
        clip_ratio/region_mean  either
            fraction of active tokens at the token level; at the sequence level with [B]
            advantages, as TRL's `masked_batch_mean` (x.mean() on the [B, 1] ratio),
            fraction of rows.
        kl                      mean of the KL estimate over active tokens (beta > 0 only)
      TRL's low_min / high_max are min / max over processes of per-process means: not sums,
      so not here; log them from per-shard values if wanted.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    _check_options(loss_type, epsilon, epsilon_high, delta, beta, kl_estimator,
                   importance_sampling_level, ref_logp)
    logp, advantages, completion_mask = map(jnp.asarray, (logp, advantages, completion_mask))
    old_logp = None if old_logp is None else jnp.asarray(old_logp)
    ref_logp = None if ref_logp is None or beta == 0.0 else jnp.asarray(ref_logp)
    row_mask = None if row_mask is None else jnp.asarray(row_mask)
    _check_shapes(logp, old_logp, ref_logp, advantages, completion_mask, row_mask)

    dtype = _float_dtype(logp, old_logp, ref_logp)
    active = completion_mask != 0
    if row_mask is None:
        row_mask = jnp.any(active, axis=-1)
    else:
        row_mask = row_mask != 0
        active = active & row_mask[:, None]
    mask = active.astype(dtype)

    # Masked positions may hold -inf / NaN: replace them before any arithmetic (a NaN in
    # an unselected branch would still poison gradients through x * 0).
    logp = jnp.where(active, logp.astype(dtype), 0.0)
    old = jax.lax.stop_gradient(logp) if old_logp is None else jnp.where(active, old_logp.astype(dtype), 0.0)
    adv = advantages.astype(dtype)
    adv = adv[:, None] if adv.ndim == 1 else jnp.where(active, adv, 0.0)

    log_ratio = jnp.clip(logp - old, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    if importance_sampling_level == "sequence":
        lengths = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1.0)
        log_ratio = jnp.sum(log_ratio * mask, axis=-1, keepdims=True) / lengths  # [B, 1]
    ratio = jnp.exp(log_ratio)

    pg = jnp.maximum(-ratio * adv, -jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high) * adv)
    if delta is not None:
        pg = jnp.where(adv < 0, jnp.minimum(pg, -delta * adv), pg)
    per_token = jnp.broadcast_to(pg, logp.shape)

    per_row = importance_sampling_level == "sequence" and adv.shape[-1] == 1
    metrics = _clip_metrics(ratio, adv, mask, row_mask, epsilon, epsilon_high, per_row)
    if beta > 0.0:
        ref = jnp.where(active, ref_logp.astype(dtype), 0.0)
        kl = jnp.where(active, registry.get("kl", kl_estimator)(logp, ref), 0.0)
        per_token = per_token + beta * kl
        metrics["kl"] = Weighted(jnp.sum(kl * mask), jnp.sum(active, dtype=jnp.int32))

    loss = registry.get("loss_agg", loss_type)(per_token, mask, row_mask, max_completion_length)
    return LossOutput(loss, metrics)


def _clip_metrics(ratio, adv, mask, row_mask, epsilon, epsilon_high, per_row) -> dict[str, Weighted]:
    """TRL's clip_ratio/* as (sum, count): per active token, or per row (sequence level)."""
    ratio, adv = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(adv)
    low = (ratio < 1.0 - epsilon) & (adv < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    if per_row:  # sequence level with per-row advantages: TRL's x.mean() over the [B, 1] flags
        weight, count = row_mask[:, None], jnp.sum(row_mask, dtype=jnp.int32)
    else:
        weight, count = mask != 0, jnp.sum(mask != 0, dtype=jnp.int32)
    frac = lambda flags: Weighted(jnp.sum(flags & weight, dtype=jnp.int32), count)  # noqa: E731
    return {
        "clip_ratio/low_mean": frac(low),
        "clip_ratio/high_mean": frac(high),
        "clip_ratio/region_mean": frac(low | high),
    }
