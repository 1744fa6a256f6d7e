"""Building blocks shared by the vision tower and the decoder.

Every parameter is created through `nn.with_logical_partitioning`, so its logical axis
names (see `mmjax.sharding`) travel with it and a mesh rule table decides placement.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def dense(features: int, axes: tuple[str, str], *, use_bias: bool, dtype: Dtype, param_dtype: Dtype,
          name: str) -> nn.Dense:
    """A Dense layer whose kernel [in, out] and bias [out] carry logical axis names."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)))


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the input dtype before the scale (as HF)."""
    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                           (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return jnp.asarray(scale, self.dtype) * y.astype(x.dtype)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): the MLP of both the Qwen2 decoder and the Qwen2.5 ViT."""
    hidden: int
    act: str
    use_bias: bool
    embed_axis: str = "embed"
    mlp_axis: str = "mlp"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
        gate = dense(self.hidden, (self.embed_axis, self.mlp_axis), name="gate_proj", **kw)(x)
        up = dense(self.hidden, (self.embed_axis, self.mlp_axis), name="up_proj", **kw)(x)
        h = ACTIVATIONS[self.act](gate) * up
        return dense(x.shape[-1], (self.mlp_axis, self.embed_axis), name="down_proj", **kw)(h)


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate x [..., heads, head_dim] by angles whose cos/sin are [..., head_dim]."""
    return x * cos[..., None, :] + rotate_half(x) * sin[..., None, :]
