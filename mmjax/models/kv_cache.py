"""The decoder's KV cache and the positions of tokens appended after a prompt.

The cache is a plain pytree passed into and returned by the decoder: one {"k", "v"} dict per
layer, each [batch, kv_heads, slots, head_dim] (heads-major, so a decode step reads it as it
lies). Shared by the sampler and the learner's completion log-probs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CACHE_SLOT_AXIS = 2
CACHE_AXES = ("batch", "kv_heads", "length", "head_dim")  # logical names (mmjax.sharding rules)


def init_cache(cfg: Any, batch: int, slots: int, dtype: Any = jnp.float32) -> list[dict]:
    """Zeros for `cfg.num_hidden_layers` layers of `cfg.num_key_value_heads` x `cfg.head_dim`."""
    shape = (batch, cfg.num_key_value_heads, slots, cfg.head_dim)
    # Laid out as the layers write it (rows over the batch axes, KV heads over tensor) inside
    # mmjax.sharding.activation_rules; left to GSPMD, fresh zeros are replicated on every device.
    zeros = lambda: nn.with_logical_constraint(jnp.zeros(shape, dtype), CACHE_AXES)  # noqa: E731
    return [{"k": zeros(), "v": zeros()} for _ in range(cfg.num_hidden_layers)]


def completion_positions(batch, num_completion_tokens: int, num_generations: int = 1) -> jax.Array:
    """M-RoPE positions [3, B * G, Tc] of tokens after left-padded prompts.

    Token j after prompt b sits at (#real prompt tokens + rope_delta + j) on all three axes,
    as transformers' generate places them. The sampler makes them once; the Rollout carries
    them to the learner.
    """
    first = batch["attention_mask"].sum(axis=1).astype(jnp.int32) + batch["rope_deltas"].reshape(-1)
    first = jnp.repeat(first, num_generations, axis=0)
    pos = first[:, None] + jnp.arange(num_completion_tokens, dtype=jnp.int32)[None, :]
    return jnp.broadcast_to(pos[None], (3,) + pos.shape)
