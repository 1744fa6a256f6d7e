"""Host-side index arrays that let the vision tower run packed images as dense blocks.

Qwen2.5-VL's ViT attends inside windows (most blocks) or inside whole frames (the
`fullatt_block_indexes` blocks), after reordering patches window by window. Both are
block-diagonal attention over a packed sequence of all images. Instead of a
[patches, patches] mask we gather the sequence into [blocks, block_len] tiles (padding
with a zero row) and scatter back, so the cost is that of the blocks alone.
Everything here depends only on the grids, so it is numpy computed once per batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class BlockIndex:
    gather: np.ndarray   # int32 [blocks, block_len]: sequence index, or N for padding
    valid: np.ndarray    # bool [blocks, block_len]
    scatter: np.ndarray  # int32 [N]: flat position of each sequence element in the tiles


@dataclasses.dataclass(frozen=True)
class VisionLayout:
    """All grid-derived indices for one packed set of images (or videos)."""
    patch_order: np.ndarray  # int32 [N]: patch permutation into window order
    rope_pos: np.ndarray     # int32 [N, 2]: (row, col) of each patch, in window order
    windows: BlockIndex      # window attention tiles
    frames: BlockIndex       # full (per-frame) attention tiles
    merged_order: np.ndarray  # int32 [N / merge^2]: undo the window order after merging

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "patch_order": self.patch_order, "rope_pos": self.rope_pos,
            "window_gather": self.windows.gather, "window_valid": self.windows.valid,
            "window_scatter": self.windows.scatter, "frame_gather": self.frames.gather,
            "frame_valid": self.frames.valid, "frame_scatter": self.frames.scatter,
            "merged_order": self.merged_order,
        }


def _blocks(seqlens: np.ndarray, total: int) -> BlockIndex:
    seqlens = seqlens[seqlens > 0]
    length = int(seqlens.max())
    starts = np.concatenate([[0], np.cumsum(seqlens)[:-1]])
    offs = np.arange(length)
    valid = offs[None, :] < seqlens[:, None]
    gather = np.where(valid, starts[:, None] + offs[None, :], total).astype(np.int32)
    scatter = np.empty(total, np.int32)
    flat = np.arange(gather.size).reshape(gather.shape)
    scatter[gather[valid]] = flat[valid]
    return BlockIndex(gather=gather, valid=valid, scatter=scatter)


def vision_layout(grid_thw: np.ndarray, *, spatial_merge_size: int, window_size: int,
                  patch_size: int) -> VisionLayout:
    """Index arrays equal to transformers' window index, cu_seqlens and rotary positions."""
    grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m = spatial_merge_size
    unit = m * m
    win = window_size // m // patch_size  # window side in merged tokens
    window_index, window_lens, rope_pos, frame_lens = [], [], [], []
    offset = 0
    for t, h, w in grid_thw.tolist():
        if h % m or w % m:
            raise ValueError(f"image_grid_thw row {[t, h, w]}: height and width must be multiples of "
                             f"spatial_merge_size={m}")
        lh, lw = h // m, w // m
        # Positions of patches, laid out merge-block-major as the processor emits them.
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (lh, m, lw, m)
        hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        rope_pos.append(np.tile(np.stack([hpos, wpos], -1), (t, 1)))
        # Merged tokens grouped window by window (pad to whole windows, then drop the pad).
        ph, pw = -lh % win, -lw % win
        idx = np.arange(t * lh * lw).reshape(t, lh, lw)
        idx = np.pad(idx, ((0, 0), (0, ph), (0, pw)), constant_values=-1)
        nh, nw = (lh + ph) // win, (lw + pw) // win
        idx = idx.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win * win)
        window_lens.append((idx >= 0).sum(-1).reshape(-1) * unit)
        flat = idx.reshape(-1)
        window_index.append(flat[flat >= 0] + offset)
        frame_lens.append(np.full(t, h * w))
        offset += t * lh * lw
    window_index = np.concatenate(window_index)
    patch_order = (window_index[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)
    n = patch_order.size
    return VisionLayout(
        patch_order=patch_order.astype(np.int32),
        rope_pos=np.concatenate(rope_pos)[patch_order].astype(np.int32),
        windows=_blocks(np.concatenate(window_lens), n),
        frames=_blocks(np.concatenate(frame_lens), n),
        merged_order=np.argsort(window_index).astype(np.int32))
