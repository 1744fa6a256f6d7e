"""Parameter creation: random init, abstract shapes, and logical axis names."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.model import Qwen25VLModule
from mmjax.processing.vision_tables import pad_pixels, vision_tables


def _dummy_inputs(cfg: Qwen25VLConfig):
    v = cfg.vision
    m = v.spatial_merge_size
    grid = np.array([[1, m, m]])
    layout = {k: jnp.asarray(a) for k, a in vision_tables(
        grid, spatial_merge_size=m, window_size=v.window_size, patch_size=v.patch_size, min_rows=1).items()}
    layout["pixel_values"] = jnp.asarray(pad_pixels(np.zeros((m * m, v.patch_dim)), layout["patch_order"].shape[0]))
    ids = jnp.full((1, 1), cfg.image_token_id, jnp.int32)
    return ids, jnp.zeros((3, 1, 1), jnp.int32), jnp.ones((1, 1), bool), layout


def _init_boxed(cfg: Qwen25VLConfig, rng, param_dtype):
    module = Qwen25VLModule(cfg, dtype=jnp.float32, param_dtype=param_dtype)
    ids, pos, mask, image = _dummy_inputs(cfg)
    return module.init(rng, ids, pos, mask, image=image)["params"]


def abstract_params(cfg: Qwen25VLConfig, param_dtype=jnp.float32):
    """ShapeDtypeStructs of every parameter (no memory, no compute)."""
    boxed = jax.eval_shape(functools.partial(_init_boxed, cfg, param_dtype=param_dtype),
                           jax.random.key(0))
    return nn.unbox(boxed)


def logical_axes(cfg: Qwen25VLConfig):
    """The logical axis names of every parameter, as a pytree of PartitionSpecs."""
    boxed = jax.eval_shape(functools.partial(_init_boxed, cfg, param_dtype=jnp.float32),
                           jax.random.key(0))
    return nn.get_partition_spec(boxed)


def init_params(cfg: Qwen25VLConfig, seed: int = 0, param_dtype=jnp.float32):
    """Random parameters (normal 0.02, norms at 1) for tests and from-scratch runs."""
    return nn.unbox(jax.jit(functools.partial(_init_boxed, cfg, param_dtype=param_dtype))(
        jax.random.key(seed)))
