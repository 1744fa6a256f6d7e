"""The device side of a GRPO step: gradients of one micro-batch, and the optimizer update.

Exact accumulation (DESIGN.md): `microbatch_grads` returns the gradient of the loss's
numerator and the (sum, count) pairs of the loss and metrics, never a mean; the learner adds
them over micro-batches (and the mesh adds them over devices) and `apply_update` divides
once by the summed denominator. For every loss_type this equals the full-batch loss.

Both functions are pure and jitted by the learner with the module and configs static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from mmjax.rl import grpo as grpo_lib
from mmjax.rl.losses import Weighted
from mmjax.train import optim


def rollout_logprobs(module, params, batch, rollout, *, num_generations: int, temperature: float):
    """Log-probs [N, Tc] of a rollout's completions under `params` (old / reference policy)."""
    lp, _ = completion_logprobs(module, params, batch, rollout["tokens"], rollout["mask"],
                                positions=rollout["positions"], num_generations=num_generations,
                                temperature=temperature)
    return jax.lax.stop_gradient(lp)


def microbatch_grads(module, params, batch, rollout, *, config: grpo_lib.GRPOConfig, param_shardings=None,
                     freeze_vision: bool = False, freeze_merger: bool = False):
    """(grads of the loss numerator, {name: Weighted}) for one micro-batch.

    freeze_vision / freeze_merger: as the OptimizerConfig's; those grads are zeros and their
    backward pass is not computed.

    rollout: dict of device arrays: tokens / mask / positions [.., N, Tc] of the completions,
    old_logp (the sampler's, or recomputed), ref_logp (or None), sampler_logp (for the drift
    metric), advantages [N] and optionally row_mask [N] (the rows the loss counts; default:
    the rows with an active token).
    """
    mask = rollout["mask"]

    def numerator(p):
        p = optim.stop_frozen(p, freeze_vision, freeze_merger)
        lp, ent = completion_logprobs(module, p, batch, rollout["tokens"], mask, positions=rollout["positions"],
                                      num_generations=config.num_generations, temperature=config.temperature,
                                      with_entropy=True)
        out = grpo_lib.loss(config, lp, rollout["old_logp"], rollout["advantages"], mask,
                            ref_logp=rollout.get("ref_logp"), row_mask=rollout.get("row_mask"))
        return out.loss.total, (out, lp, ent)

    (_, (out, lp, ent)), grads = jax.value_and_grad(numerator, has_aux=True)(params)
    if param_shardings is not None:  # GSPMD would otherwise lay grads out as it likes
        grads = jax.lax.with_sharding_constraint(grads, param_shardings)
    maskf = mask.astype(jnp.float32)
    tokens = jnp.sum(mask, dtype=jnp.int32)
    drift = jnp.abs(jax.lax.stop_gradient(lp) - rollout["sampler_logp"]) * maskf
    stats = dict(out.metrics)
    stats["loss"] = out.loss
    stats["entropy"] = Weighted(jnp.sum(jax.lax.stop_gradient(ent) * maskf), tokens)
    stats["sampling/sampling_logp_difference/mean"] = Weighted(jnp.sum(drift), tokens)
    return grads, stats, jnp.max(drift)


def apply_update(optimizer: optax.GradientTransformation, params, opt_state, grad_sums, denominator):
    """Divide the summed numerator gradients once, then one optimizer step.

    Returns (params, opt_state, grad_norm) with grad_norm of the divided gradients (before
    clipping, as TRL logs it)."""
    grads = jax.tree.map(lambda g: g / jnp.maximum(denominator, 1).astype(g.dtype), grad_sums)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)
