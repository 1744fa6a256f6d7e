"""The device side of a GRPO step: the loss of one micro-batch, and rollout log-probs.

`GRPOLoss` is the objective's `loss_fn`: it returns the (sum, count) pairs of the policy loss
and its metrics, never a mean; the Trainer (mmjax.train.trainer) adds them over micro-batches
and divides once, so every loss_type equals its full-batch value. Pure functions, jitted
with the module and the config static.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs, packed_completion_logprobs
from mmjax.rl import grpo as grpo_lib
from mmjax.train.weighted import Max, Weighted


@flax.struct.dataclass
class GRPOMicroBatch:
    """One micro-batch of a GRPO step on the device: the prompts and their G completions each."""
    batch: dict[str, Any]        # the prompt batch (bucketed prompt arrays, positions, vision tables)
    tokens: jax.Array            # int32 [N, Tc] completion tokens, N = prompts x G (x G / completion_chunks)
    mask: jax.Array              # bool [N, Tc] tokens in the loss (filtered / truncated rows zeroed)
    positions: jax.Array         # int32 [3, N, Tc] M-RoPE positions of the completion tokens
    sampler_logp: jax.Array      # float32 [N, Tc] the sampler's policy log-probs (drift metric)
    advantages: jax.Array        # float32 [N]
    row_mask: jax.Array          # bool [N] rows counted by the loss (online filtering drops some)
    old_logp: jax.Array | None = None   # [N, Tc] the sampler's, or recomputed
    ref_logp: jax.Array | None = None   # [N, Tc] the reference policy's (beta > 0)
    packed: dict[str, jax.Array] | None = None  # update_layout "packed": tokens, positions, segments, slot
    #                                               (+ row_prompt with grpo.packed_rows "pooled")


def micro_logprobs(module, params, micro: GRPOMicroBatch, *, num_generations: int, temperature: float,
                   with_entropy: bool = False):
    """Log-probs (and entropy) [N, Tc] of a micro-batch's completions, from its padded rows or, when
    it carries them, its packed rows (`mmjax.rl.packing`): the same numbers either way."""
    if micro.packed is None:
        return completion_logprobs(module, params, micro.batch, micro.tokens, micro.mask, positions=micro.positions,
                                   num_generations=num_generations, temperature=temperature,
                                   with_entropy=with_entropy)
    p = micro.packed
    return packed_completion_logprobs(module, params, micro.batch, p["tokens"], p["positions"], p["segments"],
                                      p["slot"], micro.mask, row_prompt=p.get("row_prompt"), temperature=temperature,
                                      with_entropy=with_entropy)


def rollout_logprobs(module, params, micro: GRPOMicroBatch, *, num_generations: int, temperature: float):
    """Log-probs [N, Tc] of a micro-batch's completions under `params` (old / reference policy)."""
    lp, _ = micro_logprobs(module, params, micro, num_generations=num_generations, temperature=temperature)
    return jax.lax.stop_gradient(lp)


@dataclasses.dataclass(frozen=True)
class GRPOLoss:
    """The GRPO loss of one micro-batch: (Weighted loss, {TRL metric name: Weighted | Max})."""
    module: Any
    config: grpo_lib.GRPOConfig

    def __call__(self, params, micro: GRPOMicroBatch):
        config, mask = self.config, micro.mask
        lp, ent = micro_logprobs(self.module, params, micro, num_generations=config.completions_per_chunk,
                                 temperature=config.temperature, with_entropy=True)
        out = grpo_lib.loss(config, lp, micro.old_logp, micro.advantages, mask, ref_logp=micro.ref_logp,
                            row_mask=micro.row_mask)
        maskf = mask.astype(jnp.float32)
        tokens = jnp.sum(mask, dtype=jnp.int32)
        drift = jnp.abs(jax.lax.stop_gradient(lp) - micro.sampler_logp) * maskf
        metrics = dict(out.metrics)
        metrics["entropy"] = Weighted(jnp.sum(jax.lax.stop_gradient(ent) * maskf), tokens)
        metrics["sampling/sampling_logp_difference/mean"] = Weighted(jnp.sum(drift), tokens)
        metrics["sampling/sampling_logp_difference/max"] = Max(jnp.max(drift))
        return out.loss, metrics
