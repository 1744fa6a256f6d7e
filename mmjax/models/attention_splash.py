"""Pallas TPU splash attention behind the mmjax attention interface.

Splash takes a static mask per head (causal or full) and per-sequence segment ids; key
validity is folded into the key segment ids (an invalid key gets an id no query has).
The static causal mask is top-left aligned, so it needs queries at slots 0..T-1 over
keys 0..T-1: S == T and no cache offset. Off TPU the kernel runs in interpret mode
(slow; for tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_BLOCKS = (512, 256, 128)  # tried in order; splash needs lengths that the block divides
_NO_QUERY_SEGMENT = jnp.iinfo(jnp.int32).min  # key id of invalid keys; queries must not use it


def splash_block(t: int, s: int) -> int | None:
    """The block size splash would use for T queries over S keys, or None if it cannot run."""
    if t != s:
        return None
    return next((bl for bl in _BLOCKS if t % bl == 0), None)


@functools.lru_cache(maxsize=64)
def _kernel(t: int, heads: int, causal: bool, block: int, interpret: bool):
    # Built once per shape: make_splash_mha preprocesses the mask into block tables in numpy.
    from jax.experimental.pallas.ops.tpu import splash_attention as sa
    head_mask = sa.CausalMask((t, t)) if causal else sa.FullMask((t, t))
    sizes = sa.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block)
    # The kernel holds its block tables as arrays; built under a jit trace they would be
    # tracers, and this cache would leak them into the next trace.
    with jax.ensure_compile_time_eval():
        return sa.make_splash_mha(sa.MultiHeadMask([head_mask] * heads), block_sizes=sizes,
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, key_valid, q_segments=None, kv_segments=None, *, causal: bool,
                     interpret: bool | None = None):
    """Attention of q [B, T, H, D] over heads-major k, v [B, Hkv, T, D] (queries at slots 0..T-1).

    Returns [B, T, H, D]. Fully-masked rows come back finite (uniform over the keys); the
    caller zeroes them.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as sa
    b, t, h, d = q.shape
    s = k.shape[2]
    block = splash_block(t, s)
    if block is None:
        raise ValueError(
            f"attention implementation='splash' needs S == T and T a multiple of one of "
            f"{_BLOCKS}; got q {tuple(q.shape)} (T={t}) and k {tuple(k.shape)} (S={s})")
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    kernel = _kernel(t, h, bool(causal), block, bool(interpret))
    # Splash does not scale the scores itself.
    qh = (q * jnp.asarray(d ** -0.5, q.dtype)).transpose(0, 2, 1, 3)  # [B, H, T, D]
    q_ids = jnp.zeros((b, t), jnp.int32) if q_segments is None else q_segments.astype(jnp.int32)
    kv_ids = jnp.zeros((b, s), jnp.int32) if kv_segments is None else kv_segments.astype(jnp.int32)
    kv_ids = jnp.where(key_valid, kv_ids, _NO_QUERY_SEGMENT)

    def one(qb, kb, vb, qi, ki):
        return kernel(qb, kb, vb, segment_ids=sa.SegmentIds(qi, ki))

    out = jax.vmap(one)(qh, k, v, q_ids, kv_ids)
    return out.transpose(0, 2, 1, 3).astype(q.dtype)
