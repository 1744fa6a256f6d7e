"""Group-relative advantages from rewards (TRL `scale_rewards`), pure JAX.

    adv = compute_advantages(rewards, num_generations=8, scale_rewards="group")

Layout: ``rewards`` is [N*G] in prompt-major order, row n belongs to prompt n // G (the
order the sampler emits: each prompt's G completions are adjacent). G is static.

All modes centre on the group mean, A_i = r_i - mean(group of i); then
- "group": A_i / (std(group of i) + 1e-4)                       (TRL default, SPEC 3)
- "batch": A_i / (std(all N*G rewards) + 1e-4)                  (TRL "batch", PPO-Lite)
- "none":  no division                                           (Dr. GRPO)

std is torch.std's default, the UNBIASED estimator (ddof=1, Bessel's correction):
TRL `GRPOTrainer._generate_and_score_completions` calls ``rewards.view(-1, G).std(dim=1)``
and, for "batch", ``rewards.std()`` (trl/trainer/grpo_trainer.py L2687-2715 at f2cd5771,
/work/shared/ANCHORS-TRAINING.md section 4); Tunix's grpo advantage is ddof=1 too. TRL
special-cases a single generation (G = 1) or a single reward in "batch" mode, where the
unbiased std is undefined, to std = 0; mmjax does the same, so such advantages are 0.

A group whose rewards are all equal gets A = 0 exactly (0 / (0 + 1e-4)): no signal and
no NaN. ``frac_reward_zero_std`` counts those groups for logging (TRL's metric).

Rewards from several devices must be gathered before calling this (the group of a row
may sit on another shard in "batch" mode, and TRL gathers first too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.rl import registry
from mmjax.train.weighted import Weighted

STD_EPS = 1e-4  # TRL: advantages / (std_rewards + 1e-4)
SCALE_REWARDS = ("group", "batch", "none")


def _grouped(rewards: jax.Array, num_generations: int) -> jax.Array:
    """rewards [N*G] -> [N, G], with the errors a wrong layout deserves."""
    rewards = jnp.asarray(rewards)
    if not isinstance(num_generations, int) or isinstance(num_generations, bool) or num_generations < 1:
        raise ValueError(f"num_generations must be an int >= 1 (static), got {num_generations!r}")
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [num_prompts * num_generations], got shape {rewards.shape}")
    if rewards.shape[0] % num_generations:
        raise ValueError(f"rewards has {rewards.shape[0]} rows, not a multiple of "
                         f"num_generations={num_generations} (prompt-major layout: row n is prompt n // G)")
    if not jnp.issubdtype(rewards.dtype, jnp.floating):
        rewards = rewards.astype(jnp.float32)
    return rewards.reshape(-1, num_generations)


def _shifted(grouped: jax.Array) -> jax.Array:
    # Subtracting each group's first reward changes neither the centred values nor the std,
    # and makes an all-equal group exactly 0 (the mean of G copies of 0.1 is not 0.1 in
    # floating point, so r - mean(r) would leave ~1e-17 / 1e-4 = 1e-13 "advantages").
    return grouped - grouped[:, :1]


def _unbiased_std(x: jax.Array, axis=None) -> jax.Array:
    """torch.std default (ddof=1); 0 where only one value exists (TRL's G = 1 special case)."""
    n = x.size if axis is None else x.shape[axis]
    if n < 2:
        return jnp.zeros_like(jnp.mean(x, axis=axis))
    return jnp.std(x, axis=axis, ddof=1)


def group_std(rewards: jax.Array, num_generations: int) -> jax.Array:
    """Per-row std of the row's group, [N*G] (unbiased, as TRL)."""
    grouped = _shifted(_grouped(rewards, num_generations))
    return jnp.repeat(_unbiased_std(grouped, axis=1), num_generations)


def _centred(rewards: jax.Array, num_generations: int) -> jax.Array:
    grouped = _shifted(_grouped(rewards, num_generations))
    return (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)


@registry.register("advantage", "group")
def group_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
    """(r - group mean) / (group std + 1e-4), [N*G]."""
    return _centred(rewards, num_generations) / (group_std(rewards, num_generations) + STD_EPS)


@registry.register("advantage", "batch")
def batch_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
    """(r - group mean) / (std of all rewards + 1e-4), [N*G]."""
    flat = _grouped(rewards, num_generations).reshape(-1)
    batch_std = _unbiased_std(flat - flat[0])  # shifted, as in _shifted
    return _centred(rewards, num_generations) / (batch_std + STD_EPS)


@registry.register("advantage", "none")
def centred_advantages(rewards: jax.Array, num_generations: int) -> jax.Array:
    """r - group mean, [N*G] (Dr. GRPO: no std scaling)."""
    return _centred(rewards, num_generations)


def compute_advantages(rewards: jax.Array, num_generations: int, scale_rewards: str = "group") -> jax.Array:
    """Advantages [N*G] for ``scale_rewards`` in "group" | "batch" | "none" (or a registered name)."""
    return registry.get("advantage", scale_rewards)(rewards, num_generations)


def frac_reward_zero_std(rewards: jax.Array, num_generations: int) -> Weighted:
    """(groups whose rewards are all equal, groups): TRL's ``frac_reward_zero_std``.

    TRL flags ``isclose(std, 0)`` (atol 1e-8) per row and averages over rows; every group
    has G rows, so the fraction of groups is the same number. As (sum, count) it adds up
    across devices and steps like the loss terms.
    """
    grouped = _shifted(_grouped(rewards, num_generations))
    zero = jnp.abs(_unbiased_std(grouped, axis=1)) <= 1e-8
    return Weighted(jnp.sum(zero, dtype=jnp.int32), jnp.asarray(grouped.shape[0], jnp.int32))
