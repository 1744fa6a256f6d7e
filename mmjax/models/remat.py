"""Rematerialisation by policy name (MaxText's `remat_policy`), for decoder layers and ViT blocks.

Policies trade memory for recompute in the backward pass:
  none            keep every activation (no jax.checkpoint)
  full            keep only the layer inputs; recompute the whole layer
  save_dots       keep matmul outputs without batch dimensions (jax's dots_with_no_batch_dims)
  save_qkv_proj   keep the tagged q/k/v projections (checkpoint_name "query_proj", ...)
  save_qkv_out    keep q/k/v and the attention output projection ("out_proj")
Tags are set with `jax.ad_checkpoint.checkpoint_name` in the layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax

_POLICIES = {
    "full": None,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv_proj": jax.checkpoint_policies.save_only_these_names("query_proj", "key_proj", "value_proj"),
    "save_qkv_out": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "out_proj"),
}
REMAT_POLICIES = ("none",) + tuple(_POLICIES)


def remat_module(module_cls, policy: str):
    """`module_cls` itself for "none", else wrapped in nn.remat with the named policy."""
    if policy == "none":
        return module_cls
    if policy not in _POLICIES:
        raise ValueError(f"remat policy {policy!r} is not one of {REMAT_POLICIES}")
    return nn.remat(module_cls, policy=_POLICIES[policy], prevent_cse=True)
