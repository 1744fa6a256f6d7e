"""The Qwen2 decoder with multimodal RoPE (M-RoPE) and an explicit, fixed-size KV cache.

The cache (`mmjax.models.kv_cache`) is a plain pytree passed in and returned; a call writes
its tokens at `cache_index` and attends over every slot that `key_valid` marks and that is
not in the future.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jax.ad_checkpoint import checkpoint_name

from mmjax.models.attention import attention
from mmjax.models.kv_cache import CACHE_AXES
from mmjax.models.layers import GatedMLP, RMSNorm, apply_rotary
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
    """q/k/v kernels [embed, heads, head_dim], biases [heads, head_dim], o_proj [heads, head_dim, embed]."""
    cfg: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, key_valid, q_slots, cache, cache_index, key_groups, prefix=None,
                 segments=None):
        cfg = self.cfg
        hd, h, hkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads

        def shaped(init, shape, axes):
            # DenseGeneral asks its initialisers for the flattened [in, out] / [out] shape; the
            # boxed value must already have one dim per logical name (Flax constrains it by them
            # under active rules), so reshape inside the box. Values equal `layers.dense`'s.
            return nn.with_logical_partitioning(
                lambda rng, flat, dtype: init(rng, flat, dtype).reshape(shape), axes)

        def heads_dense(kernel_shape, axes: tuple[str, ...], contracted: int, use_bias: bool, name: str):
            # One kernel dim per logical axis (contracted dims first): tensor parallelism splits whole heads.
            return nn.DenseGeneral(
                kernel_shape[contracted:], axis=tuple(range(-contracted, 0)), use_bias=use_bias, dtype=self.dtype,
                param_dtype=self.param_dtype, name=name,
                kernel_init=shaped(nn.initializers.normal(0.02), kernel_shape, axes),
                bias_init=shaped(nn.initializers.zeros, kernel_shape[contracted:], axes[contracted:]))

        d = x.shape[-1]

        def project(heads, axis, name):  # [B, T, D] -> [B, T, heads, head_dim]
            return heads_dense((d, heads, hd), ("embed", axis, "head_dim"), 1, True, name)(x)

        q = project(h, "q_heads", "q_proj")
        k, v = project(hkv, "kv_heads", "k_proj"), project(hkv, "kv_heads", "v_proj")
        q, k, v = (checkpoint_name(a, n) for a, n in ((q, "query_proj"), (k, "key_proj"), (v, "value_proj")))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # heads-major, the cache layout
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, 0, cache_index, 0))
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, 0, cache_index, 0))
            # The cache is generation's largest activation: rows over the data axes, KV heads over tensor.
            k, v = (nn.with_logical_constraint(a, CACHE_AXES) for a in (k, v))
            cache = {"k": k, "v": v}
        shared = None if prefix is None else (prefix[0]["k"], prefix[0]["v"], prefix[1])
        if prefix is not None and len(prefix) > 2:  # pooled packed rows: each row's prompt, gathered here
            # (inside the layer, so a rematerialised layer keeps the prompts' cache, not a copy a row)
            shared = tuple(a[prefix[2]] for a in shared)
        out, masses = attention(q, k.astype(q.dtype), v.astype(q.dtype), key_valid=key_valid, q_slots=q_slots,
                                causal=True, key_groups=key_groups, prefix=shared, q_segments=segments,
                                kv_segments=segments, implementation=self.attention)
        # Heads stay split over the tensor axis into o_proj, whose contraction then reduces them.
        out = nn.with_logical_constraint(out, ("batch", "length", "q_heads", "head_dim"))
        out = heads_dense((h, hd, d), ("q_heads", "head_dim", "embed"), 2, False, "o_proj")(out)
        return checkpoint_name(out, "out_proj"), cache, masses


class DecoderLayer(nn.Module):
    cfg: TextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, key_valid, q_slots, cache, cache_index, key_groups, prefix=None,
                 segments=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(self.cfg.rms_norm_eps, name="input_layernorm", **kw)(x)
        h, cache, masses = SelfAttention(self.cfg, name="self_attn", attention=self.attention, **kw)(
            h, cos, sin, key_valid, q_slots, cache, cache_index, key_groups, prefix, segments)
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
        self.layers = [layer(self.cfg, name=f"layers_{i}", attention=self.attention, **kw)
                       for i in range(self.cfg.num_hidden_layers)]
        self.norm = RMSNorm(self.cfg.rms_norm_eps, name="norm", **kw)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        return self.embed_tokens(input_ids)

    def attend(self, hidden: jax.Array) -> jax.Array:
        """Tied output head: hidden @ embedding^T."""
        return self.embed_tokens.attend(hidden)

    def __call__(self, inputs_embeds, position_ids, key_valid, cache=None, cache_index=0, key_groups=None,
                 prefix=None, segments=None):
        """inputs_embeds [B, T, D], position_ids [3, B, T], key_valid bool [B, S].

        S is the number of cache slots (or T without a cache). Returns the final-normed
        hidden states [B, T, D], the updated cache (or None) and, when key_groups [B, S, G]
        is given, per-layer attention masses [L, B, T, H, G].
        prefix: optional (cache, key_valid [P, Sp]) of P prompts whose KV cache (`init_cache`
        layout, Sp slots) the rows attend before their own keys, B / P rows per prompt (the
        G completions of a rollout or a learner); it is read as it lies, never repeated.
        (cache, key_valid, row_prompt int [B]): row b attends prompt row_prompt[b] (pooled
        packed rows, mmjax.rl.packing); each layer gathers its cache per row.
        The own keys are then the rows' own cache (written at cache_index) or, without one,
        the T tokens themselves.
        segments: optional int [B, T] with a prefix and no cache: rows packing several
        completions of their prompt (mmjax.rl.packing); a token sees the prefix and the earlier
        tokens of its own segment only (0 = an empty slot).
        """
        b, t, _ = inputs_embeds.shape
        # Causal in slot space; without a cache, query t sits at slot t (None lets fused
        # kernels use their own causal mask).
        q_slots = None if cache is None else cache_index + jnp.arange(t, dtype=jnp.int32)
        cos, sin = mrope_cos_sin(position_ids, self.cfg, self.dtype)
        x = nn.with_logical_constraint(inputs_embeds.astype(self.dtype), ("batch", "length", "embed"))
        new_cache, all_masses = [], []
        for i, layer in enumerate(self.layers):
            layer_prefix = None if prefix is None else (prefix[0][i], *prefix[1:])
            x, layer_cache, masses = layer(x, cos, sin, key_valid, q_slots, None if cache is None else cache[i],
                                           cache_index, key_groups, layer_prefix, segments)
            new_cache.append(layer_cache)
            all_masses.append(masses)
        x = self.norm(x)
        masses = jnp.stack(all_masses) if key_groups is not None else None
        return x, (new_cache if cache is not None else None), masses
