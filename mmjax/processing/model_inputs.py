"""The one batch format from the pipeline to the model: `model_batch` builds it.

Both the grain pipeline (`mmjax.data.batching.Batcher`, in the workers) and
`Qwen2_5_VL.prepare` (numpy arrays from a user) call `model_batch`, so inputs are checked,
M-RoPE positions made and vision tables built in one place. The sampler and the learner
take the result as it is and recompute nothing. A batch is a dict of numpy arrays:

  input_ids       int32 [B, T]
  attention_mask  bool  [B, T]
  positions       int32 [3, B, T]   M-RoPE (temporal, height, width); 0 on padding
  rope_deltas     int32 [B, 1]      a token after the prompt sits at (#real tokens + delta)
  image / video   None, or a dict: pixel_values float32 [Np, patch_dim] (zero-padded rows)
                  and the fixed-shape tables of `mmjax.processing.vision_tables`
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmjax.processing.mrope import get_rope_index, mm_token_type_ids
from mmjax.processing.sample import check_placeholder_counts
from mmjax.processing.vision_tables import check_grids, pad_pixels, vision_tables

DEVICE_KEYS = ("input_ids", "attention_mask", "positions", "rope_deltas", "image", "video")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the host must know of a model to build its batches (`Qwen25VLConfig.input_spec()`)."""
    vocab_size: int
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    spatial_merge_size: int = 2
    window_size: int = 112
    patch_size: int = 14
    patch_dim: int = 1176
    tokens_per_second: int = 2
    min_vision_rows: int = 64  # smallest patch-row bucket (mmjax.processing.buckets)
    # Most patches per frame (image processor max_pixels / patch_size^2); fixes the vision
    # tower's full-attention tile length for a run. None: sized to each batch's largest frame.
    frame_patches: int | None = None


# ---- dtype / range checks of the raw arrays (before any cast could hide a bad value) ----

def _dtype_kind(a: np.ndarray) -> str:
    """'int', 'bool', 'float' (numpy or ml_dtypes) or 'other' (complex, str, object, ...)."""
    import jax  # knows ml_dtypes' bfloat16, which numpy does not call floating
    if a.dtype == np.bool_:
        return "bool"
    if np.issubdtype(a.dtype, np.integer):
        return "int"
    return "float" if jax.dtypes.issubdtype(a.dtype, np.floating) else "other"


def check_token_ids(input_ids, vocab_size: int, field: str = "input_ids") -> np.ndarray:
    """input_ids as an integer array [B, T] whose every id is in [0, vocab_size)."""
    ids = np.asarray(input_ids)
    if _dtype_kind(ids) != "int":
        hint = (" (token ids are integers; a float array is refused even when its values are whole "
                "numbers: cast it with .astype(np.int32) if it holds ids)") if _dtype_kind(ids) == "float" else ""
        raise ValueError(f"{field} must be an integer array, got dtype {ids.dtype}{hint}")
    if ids.ndim != 2:
        raise ValueError(f"{field} must be [batch, length]; got shape {ids.shape}")
    # Compare in the given dtype: a cast to int32 first would wrap 2**32 + 6 to 6.
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if bad.size:
        row, pos = (int(i) for i in bad[0])
        raise ValueError(
            f"{field} row {row}, position {pos}: id {ids[row, pos]} is outside the vocabulary "
            f"(vocab_size={vocab_size}; {len(bad)} such id(s) in the batch)")
    return ids


def check_attention_mask(attention_mask, shape, field: str = "attention_mask") -> np.ndarray:
    mask = np.ones(shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
    if _dtype_kind(mask) not in ("int", "bool"):
        raise ValueError(f"{field} must be an integer or bool array, got dtype {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"{field} shape {mask.shape} != the ids' shape {tuple(shape)}")
    if mask.dtype != np.bool_ and ((mask != 0) & (mask != 1)).any():
        raise ValueError(f"{field} must hold only 0 and 1; got values {np.unique(mask).tolist()[:10]}")
    return mask


def check_pixels(pixel_values, field: str) -> np.ndarray:
    pixels = np.asarray(pixel_values)
    if _dtype_kind(pixels) not in ("float", "int"):
        raise ValueError(f"{field} must be a real floating or integer array, got dtype {pixels.dtype}")
    return pixels


def check_seconds(second_per_grid_ts, n_videos: int) -> np.ndarray | None:
    """second_per_grid_ts: one finite, positive number of seconds per video grid."""
    if second_per_grid_ts is None:
        return None
    seconds = np.asarray(second_per_grid_ts)
    if _dtype_kind(seconds) not in ("float", "int"):
        raise ValueError(f"second_per_grid_ts must be a real number array, got dtype {seconds.dtype}")
    if seconds.ndim != 1 or len(seconds) != n_videos:
        raise ValueError(f"second_per_grid_ts has shape {seconds.shape} but video_grid_thw holds {n_videos} "
                         f"videos: give one value per video, shape [{n_videos}]")
    values = seconds.astype(np.float64)
    if not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"second_per_grid_ts must be finite and > 0; got {values.tolist()[:10]}")
    return seconds


def check_token_id_arg(name: str, ids, vocab_size: int, note: str = "", single: bool = False) -> None:
    """eos_token_ids (one id or several) / pad_token_id (single) of `generate`: ints in [0, vocab_size)."""
    if single and np.ndim(ids) != 0:
        raise ValueError(f"{name} must be one token id, got {ids!r}{note}")
    if isinstance(ids, np.ndarray):
        items = ids.reshape(-1).tolist()  # numpy scalars -> Python ints / floats / bools
    elif isinstance(ids, (list, tuple, set, frozenset, range)):
        items = list(ids)
    else:
        items = [ids]
    for i in items:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"{name}: {i!r} ({type(i).__name__}) is not an integer token id{note}")
        if not 0 <= int(i) < vocab_size:
            raise ValueError(f"{name}: id {int(i)} is outside the vocabulary (vocab_size={vocab_size}){note}")


def vision_batch(pixel_values, grid_thw, spec: InputSpec, field: str = "pixel_values",
                 grid_field: str = "image_grid_thw") -> dict[str, np.ndarray]:
    """Checked pixels padded to the bucket, with their fixed-shape tables."""
    grid = check_grids(grid_thw, grid_field, spec.spatial_merge_size)
    pixels = check_pixels(pixel_values, field)
    n = int(np.prod(grid, axis=1).sum())
    if pixels.shape != (n, spec.patch_dim):
        raise ValueError(f"{field} has shape {pixels.shape} but {grid_field}={grid.tolist()} needs "
                         f"[{n}, {spec.patch_dim}] (sum of t*h*w patches x patch_dim)")
    tables = vision_tables(grid, spatial_merge_size=spec.spatial_merge_size, window_size=spec.window_size,
                           patch_size=spec.patch_size, min_rows=spec.min_vision_rows,
                           frame_patches=spec.frame_patches, field=grid_field)
    return {"pixel_values": pad_pixels(pixels, tables["patch_order"].shape[0], field), **tables}


def model_batch(spec: InputSpec, input_ids, attention_mask=None, *, pixel_values=None, image_grid_thw=None,
                pixel_values_videos=None, video_grid_thw=None, second_per_grid_ts=None,
                position_ids=None, rope_deltas=None) -> dict[str, Any]:
    """The model batch (module docstring) from token ids, mask and processed vision inputs.

    position_ids / rope_deltas: the pipeline passes the ones `process_sample` made in its
    workers; when absent they are computed here (transformers' get_rope_index).
    """
    # Every array is checked before anything casts or indexes with it: a cast would turn an
    # out-of-vocabulary id or a float id into a valid-looking one. int32 once checked: M-RoPE
    # positions take the ids' dtype, and uint8/uint16 would wrap negative rope deltas.
    ids = check_token_ids(input_ids, spec.vocab_size).astype(np.int32)
    mask = check_attention_mask(attention_mask, ids.shape).astype(bool)
    if (pixel_values is None) != (image_grid_thw is None):
        raise ValueError("pixel_values and image_grid_thw must be given together")
    if (pixel_values_videos is None) != (video_grid_thw is None):
        raise ValueError("pixel_values_videos and video_grid_thw must be given together")
    merge = spec.spatial_merge_size
    image_grid = None if image_grid_thw is None else check_grids(image_grid_thw, "image_grid_thw", merge)
    video_grid = None if video_grid_thw is None else check_grids(video_grid_thw, "video_grid_thw", merge)
    second_per_grid_ts = check_seconds(second_per_grid_ts, 0 if video_grid is None else len(video_grid))
    check_placeholder_counts(ids, np.zeros((0, 3)) if image_grid is None else image_grid,
                             np.zeros((0, 3)) if video_grid is None else video_grid,
                             image_token_id=spec.image_token_id, video_token_id=spec.video_token_id,
                             merge_size=merge, where="input_ids")
    if position_ids is None:
        position_ids, rope_deltas = get_rope_index(
            ids, mask, image_grid, video_grid, second_per_grid_ts, spatial_merge_size=merge,
            image_token_id=spec.image_token_id, video_token_id=spec.video_token_id,
            tokens_per_second=spec.tokens_per_second,
            mm_token_type_ids=mm_token_type_ids(ids, spec.image_token_id, spec.video_token_id))
    elif rope_deltas is None:
        raise ValueError("position_ids given without rope_deltas")
    positions = np.asarray(position_ids, np.int32)
    if positions.shape != (3,) + ids.shape:
        raise ValueError(f"position_ids shape {positions.shape} != (3,) + input_ids shape {ids.shape}")
    return {
        "input_ids": ids, "attention_mask": mask, "positions": positions,
        "rope_deltas": np.asarray(rope_deltas, np.int32).reshape(ids.shape[0], 1),
        "image": None if image_grid is None else vision_batch(pixel_values, image_grid, spec),
        "video": None if video_grid is None else vision_batch(
            pixel_values_videos, video_grid, spec, "pixel_values_videos", "video_grid_thw"),
    }
