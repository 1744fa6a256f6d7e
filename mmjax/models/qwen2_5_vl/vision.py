"""The Qwen2.5-VL vision tower: patch embedding, window/full attention blocks, patch merger."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mmjax.models.attention import attention
from mmjax.models.layers import GatedMLP, RMSNorm, apply_rotary, dense
from mmjax.models.remat import remat_module
from mmjax.models.qwen2_5_vl.config import VisionConfig

Dtype = Any


def rotary_cos_sin(rope_pos: jax.Array, head_dim: int, theta: float):
    """2-D rotary angles: the first half of each head rotates with the row, the second with the col."""
    quarter = head_dim // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(0, quarter, 2, dtype=jnp.float32) / quarter))
    freqs = rope_pos.astype(jnp.float32)[..., None] * inv_freq  # [N, 2, head_dim/4]
    freqs = freqs.reshape(freqs.shape[0], -1)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def _tiles(x: jax.Array, gather: jax.Array) -> jax.Array:
    padded = jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)], axis=0)
    return padded[gather]


class VisionAttention(nn.Module):
    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, gather, segment, scatter):
        n, d = x.shape
        heads = self.cfg.num_heads
        kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = dense(3 * d, ("vit_embed", "vit_qkv"), name="qkv", **kw)(x).reshape(n, 3, heads, -1)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        # HF rotates in float32 and casts back.
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(q.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(k.dtype)
        qt = _tiles(q, gather)  # [blocks, L, H, hd]
        kt, vt = (_tiles(a, gather).transpose(0, 2, 1, 3) for a in (k, v))  # [blocks, H, L, hd]
        # A tile packs several windows (frames): a query attends its own segment only. Empty
        # slots (segment -1) see only each other's zero rows, so no row is fully masked.
        out, _ = attention(qt, kt, vt, key_valid=jnp.ones(segment.shape, bool), q_segments=segment,
                           kv_segments=segment, implementation=self.attention)
        out = out.reshape(-1, d)[scatter]
        return dense(d, ("vit_heads", "vit_embed"), name="proj", **kw)(out)


class VisionBlock(nn.Module):
    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "explicit"

    @nn.compact
    def __call__(self, x, cos, sin, gather, segment, scatter):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = RMSNorm(1e-6, name="norm1", **kw)(x)
        x = x + VisionAttention(self.cfg, name="attn", attention=self.attention, **kw)(
            h, cos, sin, gather, segment, scatter)
        h = RMSNorm(1e-6, name="norm2", **kw)(x)
        return x + GatedMLP(self.cfg.intermediate_size, self.cfg.hidden_act, use_bias=True,
                            embed_axis="vit_embed", mlp_axis="vit_mlp", name="mlp", **kw)(h)


class PatchMerger(nn.Module):
    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(use_bias=True, dtype=self.dtype, param_dtype=self.param_dtype)
        width = x.shape[-1] * self.cfg.spatial_merge_size ** 2
        x = RMSNorm(1e-6, name="ln_q", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        x = x.reshape(-1, width)
        x = dense(width, ("vit_merge", "vit_merge_out"), name="mlp_0", **kw)(x)
        x = jax.nn.gelu(x, approximate=False)
        return dense(self.cfg.out_hidden_size, ("vit_merge_out", "embed"), name="mlp_2", **kw)(x)


class VisionTransformer(nn.Module):
    """pixel patches [Np, C*T*P*P] + vision tables -> merged embeddings [Np / merge^2, out_hidden].

    Np is the bucketed row count of `mmjax.processing.vision_tables`; rows past the real
    patches are padding, and so are the merged rows past the real tokens.
    """
    cfg: VisionConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: str = "none"
    attention: str = "explicit"

    @nn.compact
    def __call__(self, pixel_values: jax.Array, layout: dict[str, jax.Array]) -> jax.Array:
        cfg = self.cfg
        kernel = self.param(
            "patch_embed",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vit_patch", "vit_embed")),
            (cfg.patch_dim, cfg.hidden_size), self.param_dtype)
        # The Conv3d with stride == kernel is a matmul over flattened patches.
        x = jnp.dot(pixel_values.astype(self.dtype), jnp.asarray(kernel, self.dtype))
        x = x[layout["patch_order"]]
        cos, sin = rotary_cos_sin(layout["rope_pos"], cfg.head_dim, cfg.rope_theta)
        block = remat_module(VisionBlock, self.remat)
        for i in range(cfg.depth):
            kind = "frame" if i in cfg.fullatt_block_indexes else "window"
            x = block(cfg, name=f"blocks_{i}", dtype=self.dtype, param_dtype=self.param_dtype,
                      attention=self.attention)(
                x, cos, sin, layout[f"{kind}_gather"], layout[f"{kind}_segment"], layout[f"{kind}_scatter"])
        x = PatchMerger(cfg, name="merger", dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return x[layout["merged_order"]]
