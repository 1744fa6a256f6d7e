"""Scaled dot-product attention with grouped KV heads and optional key-group mass capture.

The capture is what CMAB (SPEC.md 2.2) needs: for every query row, the attention mass
that falls on each group of keys (image tokens, text tokens, ...). It is reduced inside
this function from the probabilities XLA already holds, so callers get a
[batch, queries, heads, groups] array and never a [queries, keys] map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                          key_groups: jax.Array | None = None):
    """Attention of q [B, T, H, D] over heads-major k, v [B, Hkv, S, D], H a multiple of Hkv.

    k and v are heads-major because that is the KV cache layout: a decode step then reads
    the cache as it lies, with no per-step transpose of the whole cache.

    mask: bool [B, T, S] or [B, 1, S] (keys only), True where the query may attend the key.
    key_groups: optional float [B, S, G] membership weights of keys in G groups.
    Returns (out [B, T, H, D], masses [B, T, H, G] or None).
    Scores are formed in the input dtype and normalised in float32, as transformers' eager
    attention does, so float32 results agree to rounding.
    """
    b, t, h, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    g = h // hkv
    # Heads-major operands make both products plain batched matmuls (batch = B x Hkv,
    # rows = G x T), which XLA:CPU runs markedly faster than the 5-D contraction.
    qh = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, hkv, g * t, d)
    kh, vh = k, v
    scores = jnp.einsum("bkmd,bksd->bkms", qh, kh) * jnp.asarray(d ** -0.5, q.dtype)
    scores = scores.reshape(b, hkv, g, t, s).astype(jnp.float32)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    masses = None
    if key_groups is not None:
        masses = jnp.einsum("bkgts,bsn->btkgn", probs, key_groups.astype(jnp.float32))
        masses = masses.reshape(b, t, h, key_groups.shape[-1])
    out = jnp.einsum("bkms,bksd->bkmd", probs.astype(v.dtype).reshape(b, hkv, g * t, s), vh)
    out = out.reshape(b, hkv, g, t, d).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, h, d), masses
