"""Turning next-token logits into a token: greedy, temperature, top-k, top-p, allowed set.

The order matches transformers' logits warpers (and vLLM): allowed set, then temperature,
then top-k, then top-p. Every function is pure and works on a batch of rows [N, V].

Two log-probs are reported for each chosen token:
  * `logprob`: log-softmax of the unmodified logits (temperature 1, no truncation), i.e.
    the policy's own probability. This is what GRPO's ratio and KL need.
  * `sampling_logprob`: log-prob under the distribution actually sampled from (after the
    allowed set, temperature, top-k and top-p); 0 for greedy decoding.
For reference, TRL's GRPOTrainer and verl recompute the training log-prob as
log_softmax(logits / temperature) without top-k/top-p; at temperature 1 (every GRPO recipe
in SPEC.md) that equals `logprob` here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (top_p / top_k are then ignored)."""
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy); got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off); got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def restrict(logits: jax.Array, allowed: jax.Array | None) -> jax.Array:
    """Set logits of tokens outside `allowed` (bool [V]) to -inf."""
    return logits if allowed is None else jnp.where(allowed, logits, NEG_INF)


def warp(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """Temperature, top-k and top-p applied to float32 logits [N, V]; removed tokens get -inf."""
    logits = logits / params.temperature
    if params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = jax.lax.top_k(logits, k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if params.top_p < 1.0:
        # Keep the smallest set of most likely tokens whose mass reaches top_p: a token
        # stays if the mass of the tokens ranked above it is still below top_p.
        sorted_logits = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_above = jnp.cumsum(probs, axis=-1) - probs
        keep = mass_above < params.top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, NEG_INF, logits)
    return logits


def _gather(x: jax.Array, tokens: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, tokens[:, None], axis=-1)[:, 0]


def choose(logits: jax.Array, keys: jax.Array, params: SamplingParams, allowed: jax.Array | None = None):
    """Pick one token per row of logits [N, V] with one PRNG key per row.

    Returns (tokens int32 [N], logprob [N], sampling_logprob [N]); see the module docstring.
    """
    logits = logits.astype(jnp.float32)
    policy_logprobs = jax.nn.log_softmax(logits, axis=-1)
    restricted = restrict(logits, allowed)
    if params.greedy:
        tokens = jnp.argmax(restricted, axis=-1).astype(jnp.int32)
        return tokens, _gather(policy_logprobs, tokens), jnp.zeros(tokens.shape, jnp.float32)
    warped = warp(restricted, params)
    tokens = jax.vmap(jax.random.categorical)(keys, warped).astype(jnp.int32)
    sampling_logprobs = jax.nn.log_softmax(warped, axis=-1)
    return tokens, _gather(policy_logprobs, tokens), _gather(sampling_logprobs, tokens)
