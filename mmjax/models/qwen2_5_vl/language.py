"""The Qwen2 decoder with multimodal RoPE (M-RoPE) and an explicit, fixed-size KV cache.

The cache is a plain pytree passed in and returned ({"k", "v"} per layer, each
[batch, kv_heads, slots, head_dim], slots on axis CACHE_SLOT_AXIS); a call writes its tokens at `cache_index` and attends
over every slot that `key_valid` marks and that is not in the future.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jax.ad_checkpoint import checkpoint_name

try:  # TODO(lead): the attention entry point lands with the attention implementations.
    from mmjax.models.attention import attention
except ImportError:
    from mmjax.models.attention import dot_product_attention as _dpa

    def attention(q, k, v, *, key_valid, q_slots, causal, key_groups, implementation):
        s = k.shape[2]
        mask = key_valid[:, None, :] & (jnp.arange(s)[None, None, :] <= q_slots[None, :, None])
        return _dpa(q, k, v, mask, key_groups)
from mmjax.models.layers import GatedMLP, RMSNorm, apply_rotary, dense
from mmjax.models.remat import remat_module
from mmjax.models.qwen2_5_vl.config import TextConfig

Dtype = Any


def mrope_cos_sin(position_ids: jax.Array, cfg: TextConfig, dtype: Dtype):
    """cos/sin [B, T, head_dim] from 3-row positions [3, B, T] (temporal, height, width).

    The first mrope_section[0] frequencies follow the temporal row, the next
    mrope_section[1] the height row, the rest the width row.
    """
    half = cfg.head_dim // 2
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
    freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [3, B, T, half]
    section = jnp.repeat(jnp.arange(3), jnp.array(cfg.mrope_section), total_repeat_length=half)
    freqs = jnp.take_along_axis(freqs, section[None, None, None, :], axis=0)[0]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


class SelfAttention(nn.Module):
    cfg: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, key_valid, q_slots, cache, cache_index, key_groups):
        cfg = self.cfg
        b, t, _ = x.shape
        hd, h, hkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = dense(h * hd, ("embed", "q_heads"), use_bias=True, name="q_proj", **kw)(x)
        k = dense(hkv * hd, ("embed", "kv_heads"), use_bias=True, name="k_proj", **kw)(x)
        v = dense(hkv * hd, ("embed", "kv_heads"), use_bias=True, name="v_proj", **kw)(x)
        q, k, v = (checkpoint_name(a, n) for a, n in ((q, "query_proj"), (k, "key_proj"), (v, "value_proj")))
        q, k, v = q.reshape(b, t, h, hd), k.reshape(b, t, hkv, hd), v.reshape(b, t, hkv, hd)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # heads-major, the cache layout
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, 0, cache_index, 0))
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, 0, cache_index, 0))
            cache = {"k": k, "v": v}
        out, masses = attention(q, k.astype(q.dtype), v.astype(q.dtype), key_valid=key_valid, q_slots=q_slots,
                                causal=True, key_groups=key_groups, implementation=self.attention)
        out = out.reshape(b, t, h * hd)
        out = dense(cfg.hidden_size, ("q_heads", "embed"), use_bias=False, name="o_proj", **kw)(out)
        return checkpoint_name(out, "out_proj"), cache, masses


class DecoderLayer(nn.Module):
    cfg: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, key_valid, q_slots, cache, cache_index, key_groups):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(self.cfg.rms_norm_eps, name="input_layernorm", **kw)(x)
        h, cache, masses = SelfAttention(self.cfg, name="self_attn", attention=self.attention, **kw)(
            h, cos, sin, key_valid, q_slots, cache, cache_index, key_groups)
        x = x + h
        h = RMSNorm(self.cfg.rms_norm_eps, name="post_attention_layernorm", **kw)(x)
        x = x + GatedMLP(self.cfg.intermediate_size, self.cfg.hidden_act, use_bias=False, name="mlp", **kw)(h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed")), cache, masses


class TextModel(nn.Module):
    cfg: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "explicit"
    remat: str = "none"

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed_tokens = nn.Embed(
            self.cfg.vocab_size, self.cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
        layer = remat_module(DecoderLayer, self.remat)
        self.layers = [layer(self.cfg, name=f"layers_{i}", attention=self.attention, **kw) for i in range(self.cfg.num_hidden_layers)]
        self.norm = RMSNorm(self.cfg.rms_norm_eps, name="norm", **kw)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.embed_tokens(input_ids)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """Tied output head: hidden @ embedding^T."""
        return self.embed_tokens.attend(hidden)

    def __call__(self, inputs_embeds, position_ids, key_valid, cache=None, cache_index=0, key_groups=None):
        """inputs_embeds [B, T, D], position_ids [3, B, T], key_valid bool [B, S].

        S is the number of cache slots (or T without a cache). Returns the final-normed
        hidden states [B, T, D], the updated cache (or None) and, when key_groups [B, S, G]
        is given, per-layer attention masses [L, B, T, H, G].
        """
        b, t, _ = inputs_embeds.shape
        q_slots = cache_index + jnp.arange(t, dtype=jnp.int32)  # causal in slot space
        cos, sin = mrope_cos_sin(position_ids, self.cfg, self.dtype)
        x = nn.with_logical_constraint(inputs_embeds.astype(self.dtype), ("batch", "length", "embed"))
        new_cache, all_masses = [], []
        for i, layer in enumerate(self.layers):
            x, layer_cache, masses = layer(x, cos, sin, key_valid, q_slots, None if cache is None else cache[i],
                                           cache_index, key_groups)
            new_cache.append(layer_cache)
            all_masses.append(masses)
        x = self.norm(x)
        masses = jnp.stack(all_masses) if key_groups is not None else None
        return x, (new_cache if cache is not None else None), masses


CACHE_SLOT_AXIS = 2


def init_cache(cfg: TextConfig, batch: int, slots: int, dtype: Dtype = jnp.float32) -> list[dict]:
    shape = (batch, cfg.num_key_value_heads, slots, cfg.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
            for _ in range(cfg.num_hidden_layers)]
