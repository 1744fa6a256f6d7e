"""Qwen2.5-VL 3-D M-RoPE position ids, computed on the host (numpy).

Equal to transformers 5.24 `Qwen2_5_VLModel.get_rope_index`, which is driven by
`mm_token_type_ids` (0 text, 1 image, 2 video):
  * each maximal run of equal token types is one segment; text runs get 1-D positions
    (the same value on all 3 axes) continuing from the running position;
  * an image/video run consumes the next grid (images and videos each in order, across
    the whole batch); its positions are (t * time_interval, row, col) + start, with
    rows/cols counted in merged patches and time_interval = tokens_per_second *
    second_per_grid_ts for videos (computed in float32, truncated) and 1 for images;
  * after a vision run the running position advances by max(grid_h, grid_w) // merge
    (not by the temporal extent: this is transformers 5.24's rule);
  * padded positions (attention_mask == 0) get position 0;
  * rope_deltas[b] = max(positions of b) + 1 - number of unpadded tokens of b.

Public API:
    mm_token_type_ids(input_ids, image_token_id, video_token_id) -> int32, same shape
    get_rope_index(input_ids [B, T], attention_mask [B, T] | None, image_grid_thw,
                   video_grid_thw, second_per_grid_ts, *, spatial_merge_size,
                   image_token_id, video_token_id, tokens_per_second,
                   vision_start_token_id=None, mm_token_type_ids=None)
        -> (position_ids [3, B, T] (dtype of input_ids), rope_deltas [B, 1])
"""

from __future__ import annotations

import numpy as np

TEXT, IMAGE, VIDEO = 0, 1, 2


def mm_token_type_ids(input_ids: np.ndarray, image_token_id: int, video_token_id: int) -> np.ndarray:
    """Token modality types as transformers' processors build them: 0 text, 1 image, 2 video."""
    input_ids = np.asarray(input_ids)
    types = np.zeros(input_ids.shape, dtype=np.int32)
    types[input_ids == image_token_id] = IMAGE
    types[input_ids == video_token_id] = VIDEO
    return types


_token_types = mm_token_type_ids  # get_rope_index's keyword of the same name shadows it


def _runs(types: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values as (value, start, end)."""
    if types.size == 0:
        return []
    starts = np.flatnonzero(np.diff(types, prepend=types[0] - 1))
    ends = np.append(starts[1:], types.size)
    return [(int(types[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def _vision_positions(start: int, grid_thw: np.ndarray, merge: int, time_interval: np.float32 | int) -> np.ndarray:
    """[3, t*h*w/merge^2] positions of one image/video starting at `start`."""
    t, h, w = int(grid_thw[0]), int(grid_thw[1]) // merge, int(grid_thw[2]) // merge
    if isinstance(time_interval, np.floating):
        # transformers multiplies an integer arange by a float32 scalar tensor, then truncates.
        temporal = (np.arange(t, dtype=np.float32) * time_interval).astype(np.int64)
    else:
        temporal = np.arange(t, dtype=np.int64) * time_interval
    tt, hh, ww = np.meshgrid(temporal, np.arange(h) + start, np.arange(w) + start, indexing="ij")
    positions = np.stack([tt.ravel(), hh.ravel(), ww.ravel()])
    positions[0] += start
    return positions


def get_rope_index(
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None,
    image_grid_thw: np.ndarray | None,
    video_grid_thw: np.ndarray | None,
    second_per_grid_ts: np.ndarray | None,
    *,
    spatial_merge_size: int,
    image_token_id: int,
    video_token_id: int,
    tokens_per_second: int,
    vision_start_token_id: int | None = None,
    mm_token_type_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """3-D positions [3, B, T] and rope_deltas [B, 1]; see the module docstring for the rule.

    `second_per_grid_ts` is taken as float32 (what transformers' processor returns);
    None means 1 s per grid, as in transformers. `mm_token_type_ids` defaults to the one
    derived from the image/video token ids. If `vision_start_token_id` is given, every
    image/video run must directly follow it (catches truncated or hand-built prompts).
    Raises ValueError when a run's length does not match its grid, or grids are
    missing or left over.
    """
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    batch, length = input_ids.shape
    if mm_token_type_ids is None:
        types_all = _token_types(input_ids, image_token_id, video_token_id)
    else:
        types_all = np.asarray(mm_token_type_ids)
    mask = np.ones((batch, length), dtype=bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if types_all.shape != input_ids.shape or mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {input_ids.shape}, mm_token_type_ids {types_all.shape} and attention_mask "
            f"{mask.shape} must have the same shape"
        )
    grids = {
        IMAGE: np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3),
        VIDEO: np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw).reshape(-1, 3),
    }
    seconds = (
        np.ones(len(grids[VIDEO]), np.float32)
        if second_per_grid_ts is None
        else np.asarray(second_per_grid_ts, dtype=np.float32).reshape(-1)
    )
    if len(seconds) < len(grids[VIDEO]):
        raise ValueError(f"second_per_grid_ts has {len(seconds)} values for {len(grids[VIDEO])} videos")
    used = {IMAGE: 0, VIDEO: 0}
    names = {IMAGE: "image", VIDEO: "video"}
    merge = spatial_merge_size

    position_ids = np.zeros((3, batch, length), dtype=input_ids.dtype)
    deltas = np.zeros((batch, 1), dtype=input_ids.dtype)
    for b in range(batch):
        keep = np.flatnonzero(mask[b])
        if keep.size == 0:
            raise ValueError(f"sample {b} has no unmasked tokens")
        types = types_all[b, keep]
        ids = input_ids[b, keep]
        pieces, pos = [], 0
        for kind, start, end in _runs(types):
            if kind == TEXT:
                pieces.append(np.broadcast_to(np.arange(end - start, dtype=np.int64) + pos, (3, end - start)))
                pos += end - start
                continue
            if kind not in names:
                raise ValueError(f"sample {b}: unknown mm_token_type {kind} at position {keep[start]}")
            n = used[kind]
            if n >= len(grids[kind]):
                raise ValueError(
                    f"sample {b}: {names[kind]} placeholder run at position {keep[start]} but only "
                    f"{len(grids[kind])} {names[kind]} grids were given"
                )
            grid = grids[kind][n]
            expected = int(np.prod(grid)) // merge**2
            if end - start != expected:
                raise ValueError(
                    f"sample {b}: {names[kind]} {n} has {end - start} placeholder tokens but its grid "
                    f"{grid.tolist()} needs {expected} (= t*h*w / {merge}^2)"
                )
            if vision_start_token_id is not None and (start == 0 or ids[start - 1] != vision_start_token_id):
                raise ValueError(
                    f"sample {b}: {names[kind]} {n} at position {keep[start]} is not preceded by "
                    f"the vision start token {vision_start_token_id}"
                )
            interval = np.float32(tokens_per_second) * seconds[n] if kind == VIDEO else 1
            pieces.append(_vision_positions(pos, grid, merge, interval))
            pos += max(int(grid[1]), int(grid[2])) // merge
            used[kind] += 1
        positions = np.concatenate(pieces, axis=1)
        position_ids[:, b, keep] = positions
        deltas[b, 0] = positions.max() + 1 - keep.size
    for kind, name in names.items():
        if used[kind] != len(grids[kind]):
            raise ValueError(
                f"{len(grids[kind])} {name} grids given but the batch has {used[kind]} {name} placeholder runs"
            )
    return position_ids, deltas
