"""Packing a micro-batch's ragged completions into fewer update rows (issue 24), host side.

A GRPO micro-batch holds B prompts x G completions of at most Tc tokens, most much shorter.
`pack` puts each prompt's G completions, longest first, into the first of its packed rows of
`width` token slots with room for them (first-fit decreasing): a packed row holds whole
completions of ONE prompt, so it still attends one prompt's KV cache (the shared-prefix path,
`mmjax.models.attention_prefix`), and within it each completion sees only its own segment.
Every prompt gets the same number of packed rows R (the most any prompt needs, rounded up to
a bucket of ROW_BUCKETS, so the update compiles once per (R, width) bucket); R <= G always, as a
completion never exceeds the width.

    p = pack(lengths, num_generations=8, width=Tc)       # lengths [B * G], prompt-major
    tokens_packed = packed(tokens, p, fill=pad)           # [B * R, width]
    logp = unpacked(logp_packed, p)                       # back to [B * G, Tc], 0 past each end

`pack(..., pooled=True)` pools the prompts' packed rows instead: the micro-batch gets as many rows
as all its prompts need together (a ROW_BUCKETS count over the micro-batch), not B x the most any
one prompt needs, and `Packing.prompt` names the prompt each row attends (its KV cache is gathered
per row, layer by layer, in the attention). One long-tailed prompt then no longer sets every
prompt's row count: 4 prompts x 8 completions of mean 0.3 x the width need ~3 rows each, while
the per-prompt layout runs 4 x the worst prompt's 6.

The loss then runs on the unpacked [B * G, Tc] arrays as before, so every loss type keeps
its (sum, count) aggregation unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Packing:
    """Where each completion token of a prompt-major micro-batch sits in the packed rows."""
    num_generations: int
    rows_per_prompt: int   # R: packed rows a prompt (pooled: the pool's rows)
    width: int             # W: token slots of a packed row
    row: np.ndarray        # int32 [B * R, W]: the completion (prompt-major index n) a slot holds; -1 = empty
    position: np.ndarray   # int32 [B * R, W]: the token's index within its completion; 0 where empty
    segment: np.ndarray    # int32 [B * R, W]: 1, 2, ... per completion within its packed row; 0 = empty
    slot: np.ndarray       # int32 [N, Tc]: flat packed index (packed row * W + slot) of each token; -1 past the end
    prompt: np.ndarray     # int32 [rows]: the prompt (micro-batch index) each packed row attends
    pooled: bool = False   # rows pooled over the prompts (`prompt` says whose); else R rows per prompt in order

    @property
    def fill(self) -> float:
        """The share of packed slots holding a token."""
        return float((self.row >= 0).mean()) if self.row.size else 0.0


# update_layout "auto" packs a micro-batch when its packed rows a prompt are at most this share of its
# completions. Since packed rows join their prompt's keys and run the same attention kernel as padded rows
# (blockwise on CPU), a packed row costs about a padded one: tools/bench/update_ragged.py measured packed /
# padded at equal lengths (R = G, nothing to pack) 1.07-1.31x as fast (bench model, 2-core CPU, 2026-12-07;
# 0.86x before, with explicit attention). 0.75 keeps packing to micro-batches it clearly shortens, as a GPU's
# costs are not measured yet.
AUTO_MAX_ROWS_SHARE = 0.75

# Quarter octaves: 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... (each power of two times 1, 1.25, 1.5,
# 1.75), so at most 1/5 of the rows run empty. Half octaves (..., 8, 12, 16, ...) ran the
# update_ragged bench's 13 pooled rows as 16: 23% more work for one compile fewer (2026-12-07).
ROW_BUCKETS = tuple(sorted({(m << k) >> 2 for k in range(31) for m in (4, 5, 6, 7)}))


def row_bucket(needed: int, num_generations: int, multiple: int = 1) -> int:
    """Packed rows for `needed` (of a prompt, or of a pooled micro-batch of `num_generations` completions):
    the next of ROW_BUCKETS, a multiple of `multiple` (the row shards a process holds), at most
    num_generations (a few shapes to compile, where every count would compile one program each)."""
    if not 1 <= needed <= num_generations:
        raise ValueError(f"{needed} packed rows for {num_generations} completions")
    bucket = next((b for b in ROW_BUCKETS if b >= needed), num_generations)
    return min(-(-bucket // multiple) * multiple, num_generations)


def _first_fit(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Completion indices per bin, longest first into the first bin with room (first-fit decreasing)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for j in sorted(range(len(lengths)), key=lambda j: (-int(lengths[j]), j)):
        size = int(lengths[j])
        k = next((k for k, r in enumerate(room) if r >= size), None)
        if k is None:
            bins.append([]), room.append(width)
            k = len(bins) - 1
        bins[k].append(j)
        room[k] -= size
    return bins


def pack(lengths, num_generations: int, width: int, completion_slots: int | None = None,
         rows_per_prompt: int | None = None, pooled: bool = False, multiple: int = 1) -> Packing:
    """The packing of completions of `lengths` ([B * G], prompt-major; each in [1, width]) into
    rows of `width` slots. completion_slots: Tc of the padded layout (default `width`).
    rows_per_prompt: R at least this (several processes pack their own prompts: all must agree);
    pooled: the rows of all prompts pooled: a ROW_BUCKETS count, or the per-prompt layout's when that is
    fewer, a multiple of `multiple`; rows_per_prompt then gives the pool's count another process packed to
    (the most of all processes: taken as is)."""
    lengths = np.asarray(lengths, np.int64).reshape(-1)
    g, tc = int(num_generations), int(completion_slots or width)
    if lengths.size % g:
        raise ValueError(f"{lengths.size} completions are not prompts x {g}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > min(width, tc)):
        raise ValueError(f"completion lengths must lie in [1, {min(width, tc)}] (the packed width {width} and the "
                         f"padded {tc}); got {lengths.min()} .. {lengths.max()}")
    prompts = lengths.size // g
    bins = [_first_fit(lengths[b * g:(b + 1) * g], width) for b in range(prompts)]
    if pooled:
        needed = sum(len(x) for x in bins)
        r = row_bucket(needed, max(lengths.size, 1), multiple)
        per_prompt = prompts * row_bucket(max([len(x) for x in bins] + [1]), g)
        if per_prompt < r and per_prompt % multiple == 0:
            r = per_prompt  # never more rows than the per-prompt layout (whose counts are buckets too)
        if rows_per_prompt:  # another process's count (the most): exactly it, so all processes agree
            r = max(r, int(rows_per_prompt))
        first_row = np.cumsum([0] + [len(x) for x in bins])
        prompt = np.zeros(r, np.int32)  # rows past the pool's last attend prompt 0 and hold nothing
        prompt[:first_row[-1]] = np.repeat(np.arange(prompts), [len(x) for x in bins])
    else:
        r = row_bucket(max([len(x) for x in bins] + [rows_per_prompt or 1]), g)
        first_row = np.arange(prompts + 1) * r
        prompt = np.repeat(np.arange(prompts, dtype=np.int32), r)
    rows = len(prompt)
    row = np.full((rows, width), -1, np.int32)
    position = np.zeros((rows, width), np.int32)
    segment = np.zeros((rows, width), np.int32)
    slot = np.full((prompts * g, tc), -1, np.int32)
    for b, prompt_bins in enumerate(bins):
        for k, members in enumerate(prompt_bins):
            packed_row, start = first_row[b] + k, 0
            for number, j in enumerate(members, start=1):
                n, size = b * g + j, int(lengths[b * g + j])
                row[packed_row, start:start + size] = n
                position[packed_row, start:start + size] = np.arange(size)
                segment[packed_row, start:start + size] = number
                slot[n, :size] = packed_row * width + start + np.arange(size)
                start += size
    return Packing(g, r, int(width), row, position, segment, slot, prompt, pooled)


def worth_packing(rows: int, completions: int) -> bool:
    """update_layout "auto": pack when the packed rows (a prompt's, or a pooled micro-batch's) are at most
    AUTO_MAX_ROWS_SHARE of the completions they hold."""
    return rows <= AUTO_MAX_ROWS_SHARE * completions


def length_sorted_chunks(lengths, num_generations: int, chunks: int) -> list[np.ndarray]:
    """update_layout "bucketed": the rows of each of `chunks` micro-batches of a prompt-major batch
    (lengths [B * G]): every prompt's completions sorted by length (stable), chunk j holding its
    j-th G / chunks of them, still prompt-major, so chunk 0 holds the shortest."""
    lengths = np.asarray(lengths).reshape(-1, num_generations)
    if num_generations % chunks:
        raise ValueError(f"{chunks} chunks do not divide {num_generations} completions a prompt")
    per = num_generations // chunks
    order = np.argsort(lengths, axis=1, kind="stable") + num_generations * np.arange(len(lengths))[:, None]
    return [order[:, j * per:(j + 1) * per].ravel() for j in range(chunks)]


def width_bucket(longest: int, width: int) -> int:
    """update_layout "bucketed": the token slots a micro-batch whose longest completion has `longest` tokens
    runs at: the next power of two from 16, at most `width` (the completion width; a few shapes to compile)."""
    if not 1 <= longest <= width:
        raise ValueError(f"a longest completion of {longest} tokens does not fit the completion width {width}")
    return min(max(16, 1 << (longest - 1).bit_length()), width)


def packed(array, p: Packing, fill=0) -> np.ndarray:
    """A per-token array [N, Tc, ...] laid out as the packed rows [B * R, W, ...] (`fill` where empty)."""
    array = np.asarray(array)
    taken = array[np.maximum(p.row, 0), p.position]
    empty = (p.row < 0).reshape(p.row.shape + (1,) * (array.ndim - 2))
    return np.where(empty, np.asarray(fill, array.dtype), taken)


def unpacked(array, p: Packing, fill=0) -> np.ndarray:
    """A packed per-token array [B * R, W, ...] back in the padded layout [N, Tc, ...] (`fill` past each end)."""
    array = np.asarray(array)
    flat = array.reshape((-1,) + array.shape[2:])
    taken = flat[np.maximum(p.slot, 0)]
    past = (p.slot < 0).reshape(p.slot.shape + (1,) * (array.ndim - 2))
    return np.where(past, np.asarray(fill, array.dtype), taken)
