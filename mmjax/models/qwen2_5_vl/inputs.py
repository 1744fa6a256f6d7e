"""Host-side checks and preparation of model inputs (numpy in, jax-ready dicts out)."""

from __future__ import annotations

import numpy as np

from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.vision_layout import vision_layout
from mmjax.processing.mrope import get_rope_index, mm_token_type_ids


def vision_inputs(cfg: Qwen25VLConfig, pixel_values, grid_thw, *, field: str = "pixel_values",
                  grid_field: str = "image_grid_thw"):
    """(pixel_values float [N, patch_dim], layout arrays) after checking shapes against the grid."""
    v = cfg.vision
    grid = np.asarray(grid_thw)
    if grid.ndim != 2 or grid.shape[1] != 3 or (grid <= 0).any():
        raise ValueError(f"{grid_field} must be a positive int array [num, 3] (t, h, w); got {grid.tolist()}")
    pixels = np.asarray(pixel_values)
    n = int(np.prod(grid, axis=1).sum())
    if pixels.shape != (n, v.patch_dim):
        raise ValueError(
            f"{field} has shape {pixels.shape} but {grid_field}={grid.tolist()} needs [{n}, {v.patch_dim}] "
            f"(sum of t*h*w patches x {v.in_channels}*{v.temporal_patch_size}*{v.patch_size}^2)")
    layout = vision_layout(grid, spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
                           patch_size=v.patch_size).arrays()
    return pixels.astype(np.float32), layout


def check_placeholders(cfg: Qwen25VLConfig, input_ids, grid_thw, token_id: int, what: str) -> None:
    """The number of placeholder tokens must equal the number of merged patches."""
    n_tokens = int((np.asarray(input_ids) == token_id).sum())
    n_feats = 0 if grid_thw is None else int(np.prod(np.asarray(grid_thw), axis=1).sum()) // (
        cfg.vision.spatial_merge_size ** 2)
    if n_tokens != n_feats:
        grids = None if grid_thw is None else np.asarray(grid_thw).tolist()
        raise ValueError(
            f"input_ids hold {n_tokens} {what} tokens (id {token_id}) but {what}_grid_thw={grids} gives "
            f"{n_feats} merged patches: they must be equal (was the prompt truncated, or a "
            f"placeholder not expanded?)")


def position_ids(cfg: Qwen25VLConfig, input_ids, attention_mask, image_grid_thw=None,
                 video_grid_thw=None, second_per_grid_ts=None):
    """M-RoPE positions [3, B, T] and rope_deltas [B, 1], as transformers computes them."""
    return get_rope_index(
        input_ids, attention_mask, image_grid_thw, video_grid_thw, second_per_grid_ts,
        spatial_merge_size=cfg.vision.spatial_merge_size, image_token_id=cfg.image_token_id,
        video_token_id=cfg.video_token_id, tokens_per_second=cfg.vision.tokens_per_second,
        mm_token_type_ids=mm_token_type_ids(input_ids, cfg.image_token_id, cfg.video_token_id))
