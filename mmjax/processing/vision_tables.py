"""Host-side index tables that run a batch of images through the vision tower at fixed shapes.

Qwen2.5-VL's ViT reorders patches window by window, attends inside windows (most blocks)
or inside whole frames (`fullatt_block_indexes`), then merges 2x2 patches and restores the
original order. Each is block-diagonal attention over the packed patches of all images.

The tables below express that with shapes that depend only on buckets, never on the exact
image sizes, so the tower compiles once per bucket (tpu-inference's Qwen2.5-VL does the
same with segment ids):
  * patch rows are padded to `bucket_size(N)` (zero pixels);
  * windows (frames) are packed into tiles of a fixed length, first-fit decreasing; a tile
    holds several windows (frames), told apart by segment ids, and tile slots left over get
    segment -1 and read a zero row. The tile count is bucketed as well;
  * padded patch rows never feed a real row: no real tile gathers them, and their own
    outputs (copies of a real row, so finite) are dropped by the merge order.
Everything depends only on the grids, so grain workers build the tables with the batch.
The tables equal transformers' window_index / cu_seqlens / rotary positions on the real
rows (tests/processing/test_vision_tables.py).
"""

from __future__ import annotations

import numpy as np

from mmjax.processing.buckets import bucket_multiple, bucket_size

TABLE_KEYS = ("patch_order", "rope_pos", "window_gather", "window_segment", "window_scatter",
              "frame_gather", "frame_segment", "frame_scatter", "merged_order")


def check_grids(grid_thw, field: str = "image_grid_thw", merge: int = 2) -> np.ndarray:
    """The grid as int64 [n, 3] of positive (t, h, w), h and w multiples of the merge size."""
    grid = np.asarray(grid_thw)
    if grid.dtype == np.bool_ or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"{field} must be an integer array [num, 3] (t, h, w), got dtype {grid.dtype}")
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"{field} must have shape [num, 3] (t, h, w), got shape {grid.shape}: "
                         f"{grid.tolist()}")
    for row, (t, h, w) in enumerate(grid.tolist()):
        if min(t, h, w) <= 0:
            raise ValueError(f"{field} row {row} = {[t, h, w]}: t, h and w must all be > 0")
        if h % merge or w % merge:
            raise ValueError(f"{field} row {row} = {[t, h, w]}: h and w must be multiples of "
                             f"spatial_merge_size={merge}")
    return grid.astype(np.int64)


def _window_segments(grid: np.ndarray, merge: int, win: int):
    """Window order of the merged tokens, window lengths (in patches) and frame lengths."""
    unit = merge * merge
    order, window_lens, frame_lens, rope_pos = [], [], [], []
    offset = 0
    for t, h, w in grid.tolist():
        lh, lw = h // merge, w // merge
        # Patch (row, col) positions, laid out merge-block-major as the processor emits them.
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (lh, merge, lw, merge)
        hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        rope_pos.append(np.tile(np.stack([hpos, wpos], -1), (t, 1)))
        # Merged tokens grouped window by window: pad to whole windows, then drop the pad.
        ph, pw = -lh % win, -lw % win
        idx = np.arange(t * lh * lw).reshape(t, lh, lw)
        idx = np.pad(idx, ((0, 0), (0, ph), (0, pw)), constant_values=-1)
        nh, nw = (lh + ph) // win, (lw + pw) // win
        idx = idx.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win * win)
        window_lens.append((idx >= 0).sum(-1).reshape(-1) * unit)
        flat = idx.reshape(-1)
        order.append(flat[flat >= 0] + offset)
        frame_lens.append(np.full(t, h * w))
        offset += t * lh * lw
    return (np.concatenate(order), np.concatenate(window_lens), np.concatenate(frame_lens),
            np.concatenate(rope_pos))


def _pack(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """First-fit decreasing: segment indices per tile. Full segments take a tile each."""
    tiles: list[list[int]] = []
    free: list[int] = []
    for seg in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[seg])
        for i, room in enumerate(free):
            if room >= n:
                tiles[i].append(seg)
                free[i] -= n
                break
        else:
            tiles.append([seg])
            free.append(capacity - n)
    return tiles


def _tiles(lengths: np.ndarray, capacity: int, padded_rows: int):
    """(gather [tiles, capacity], segment [tiles, capacity], scatter [padded_rows]).

    gather indexes the window-ordered sequence (padded_rows = the zero row); scatter gives
    each sequence element's flat position in the tiles (padding rows: position 0).
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    packed = _pack(lengths, capacity)
    n_tiles = bucket_size(max(len(packed), -(-padded_rows // capacity)), minimum=1)
    gather = np.full((n_tiles, capacity), padded_rows, np.int32)
    segment = np.full((n_tiles, capacity), -1, np.int32)
    scatter = np.zeros(padded_rows, np.int32)
    for tile, segs in enumerate(packed):
        slot = 0
        for seg in segs:
            n, start = int(lengths[seg]), int(starts[seg])
            gather[tile, slot:slot + n] = np.arange(start, start + n)
            segment[tile, slot:slot + n] = seg
            scatter[start:start + n] = tile * capacity + slot + np.arange(n)
            slot += n
    return gather, segment, scatter


def vision_tables(grid_thw, *, spatial_merge_size: int, window_size: int, patch_size: int,
                  min_rows: int = 64, frame_patches: int | None = None,
                  field: str = "image_grid_thw") -> dict[str, np.ndarray]:
    """Fixed-shape tables for the images (or videos) of one batch; see the module docstring.

    frame_patches: the most patches one frame can have (max_pixels / patch_size^2): fixes the
    full-attention tile length for the whole run, so one fewer shape varies between batches.
    None sizes the tiles to the batch's largest frame.

    Returns int32 arrays: patch_order [Np] (pixel row of each window-ordered position),
    rope_pos [Np, 2], {window,frame}_{gather,segment} [tiles, tile_len],
    {window,frame}_scatter [Np], merged_order [Np / merge^2]. Np = padded patch rows.
    """
    merge = spatial_merge_size
    unit = merge * merge
    grid = check_grids(grid_thw, field, merge)
    if not len(grid):
        raise ValueError(f"{field} is empty: no vision tables to build")
    win = window_size // merge // patch_size  # window side in merged tokens
    order, window_lens, frame_lens, rope_pos = _window_segments(grid, merge, win)
    n = order.size * unit
    rows = bucket_multiple(n, unit, minimum=min_rows)
    patch_order = np.concatenate([(order[:, None] * unit + np.arange(unit)[None, :]).reshape(-1),
                                  np.arange(n, rows)])
    window_gather, window_segment, window_scatter = _tiles(window_lens, win * win * unit, rows)
    largest = int(frame_lens.max())
    if frame_patches is not None and largest > frame_patches:
        raise ValueError(f"{field}: a frame of {largest} patches exceeds frame_patches={frame_patches}")
    frame_len = bucket_size(frame_patches or largest, minimum=win * win * unit)
    frame_gather, frame_segment, frame_scatter = _tiles(frame_lens, frame_len, rows)
    merged_order = np.concatenate([np.argsort(order), np.arange(order.size, rows // unit)])
    rope = np.zeros((rows, 2), np.int32)
    rope[:n] = rope_pos[patch_order[:n]]
    return {
        "patch_order": patch_order.astype(np.int32), "rope_pos": rope,
        "window_gather": window_gather, "window_segment": window_segment, "window_scatter": window_scatter,
        "frame_gather": frame_gather, "frame_segment": frame_segment, "frame_scatter": frame_scatter,
        "merged_order": merged_order.astype(np.int32),
    }


def pad_pixels(pixel_values, rows: int, field: str = "pixel_values") -> np.ndarray:
    """float32 pixel rows zero-padded to `rows` (the tables' Np)."""
    pixels = np.asarray(pixel_values)
    if pixels.shape[0] > rows:
        raise ValueError(f"{field} has {pixels.shape[0]} rows, more than the {rows} the tables hold")
    out = np.zeros((rows,) + pixels.shape[1:], np.float32)
    out[:pixels.shape[0]] = pixels
    return out


def _tile_shape(part: dict, kind: str) -> tuple[int, int]:
    return part[f"{kind}_gather"].shape


def join_tables(parts: list[dict | None]) -> dict[str, np.ndarray] | None:
    """One vision dict (pixel_values + tables) for the images of several batches, in order.

    parts: the `model_batch` image (or video) dicts of batches laid side by side (e.g. one per
    process of a global batch), None for a batch without any. The result embeds the real
    tokens of part 0, then part 1, ..., exactly as each part alone would, so
    `place_embeddings` fills the joined batch's placeholders row by row.

    Every part is re-padded to the largest part's patch rows R and tile shapes (T, C): part i
    owns pixel rows [i R, (i + 1) R) and tiles [i T, (i + 1) T); its gather indices move by
    i R (its zero row, index R_i, becomes the joined zero row P R), its scatter positions are
    re-based onto tiles of C slots, and the merged order lists every part's real tokens first,
    then all padding rows. The real patch count of a part is its window slots in use (each
    real row sits in exactly one window tile slot; padding rows in none).
    """
    real = [p for p in parts if p is not None]
    if not real:
        return None
    unit = real[0]["patch_order"].shape[0] // real[0]["merged_order"].shape[0]
    rows = max(p["patch_order"].shape[0] for p in real)
    dim = real[0]["pixel_values"].shape[1]
    tiles = {kind: tuple(max(_tile_shape(p, kind)[d] for p in real) for d in (0, 1)) for kind in ("window", "frame")}
    zero = len(parts) * rows  # the row the vision tower appends as zeros; empty slots gather it
    out: dict[str, list] = {k: [] for k in ("pixel_values", "patch_order", "rope_pos", *(
        f"{kind}_{t}" for kind in tiles for t in ("gather", "segment", "scatter")))}
    merged_real, merged_pad = [], []
    for i, part in enumerate(parts):
        base = i * rows
        r = 0 if part is None else part["patch_order"].shape[0]
        n = 0 if part is None else int((part["window_segment"] >= 0).sum())
        pixels = np.zeros((rows, dim), np.float32)
        rope = np.zeros((rows, 2), np.int32)
        order = np.arange(rows, dtype=np.int64)
        if part is not None:
            pixels[:r] = part["pixel_values"]
            rope[:r] = part["rope_pos"]
            order[:r] = part["patch_order"]
        out["pixel_values"].append(pixels)
        out["rope_pos"].append(rope)
        out["patch_order"].append(order + base)
        for kind, (t_max, c_max) in tiles.items():
            first = i * t_max * c_max  # this part's first tile slot
            gather = np.full((t_max, c_max), zero, np.int64)
            segment = np.full((t_max, c_max), -1, np.int32)
            scatter = np.full(rows, first, np.int64)  # padding rows read a real slot (finite), dropped later
            if part is not None:
                g, c = part[f"{kind}_gather"], _tile_shape(part, kind)[1]
                gather[:g.shape[0], :c] = np.where(g == r, zero, g.astype(np.int64) + base)
                segment[:g.shape[0], :c] = part[f"{kind}_segment"]
                s = part[f"{kind}_scatter"].astype(np.int64)
                scatter[:r] = s // c * c_max + s % c + first
            out[f"{kind}_gather"].append(gather)
            out[f"{kind}_segment"].append(segment)
            out[f"{kind}_scatter"].append(scatter)
        m = n // unit
        merged = np.arange(rows // unit, dtype=np.int64) if part is None else part["merged_order"].astype(np.int64)
        merged_real.append(merged[:m] + base // unit)
        merged_pad.append(np.arange(m, rows // unit) + base // unit)
    joined = {k: np.concatenate(v) for k, v in out.items()}
    joined["merged_order"] = np.concatenate(merged_real + merged_pad)
    for k in joined:
        if k != "pixel_values":
            joined[k] = joined[k].astype(np.int32)
    return joined
