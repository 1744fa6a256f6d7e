"""Blockwise (flash-style) attention in pure JAX, for long prefill and training on CPU.

XLA:CPU runs the explicit path as separate passes over a [B, H, T, S] float32 score array
(matmul, mask, max, exp, sum, divide, matmul), each streaming the whole array through
memory, and autodiff keeps the probabilities for the backward pass. Here queries and keys
are cut into tiles of [block_q x block_k]; the forward keeps a running max / sum / output
per query row (online softmax, float32 accumulators) and saves only the output and the
row log-sum-exp. The backward (a custom VJP) recomputes each tile's probabilities, so
memory stays O(T x block) instead of O(T x S).

Tiles that no (query, key) pair of the tile may use are skipped: keys wholly in the
future of every query of the tile (the upper triangle of causal prefill), key blocks with
no valid key (left padding), and tiles whose query and key segment ranges do not meet
(packed vision tiles). Whether a tile is skipped is decided from O(T + S) statistics of
the mask description, never from a [T, S] mask.

Fully-masked query rows give an output of 0 and no gradient.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

_INT_MAX = jnp.iinfo(jnp.int32).max
_INT_MIN = jnp.iinfo(jnp.int32).min
# A key segment every query segment sees: a prompt's keys joined before the completions packed in
# a row (mmjax.rl.packing). Not -1, which the vision tiles give their empty slots.
ANY_SEGMENT = int(_INT_MIN)


def allowed_mask(key_valid, key_pos, q_slots, q_segments, kv_segments, causal: bool):
    """bool [B, T, S]: True where the query may attend the key.

    key_valid [B, S]; key_pos [S] slot index of each key; q_slots [B, T];
    q_segments [B, T] / kv_segments [B, S] or None; a key of segment ANY_SEGMENT is any query's.
    """
    ok = key_valid[:, None, :]
    if causal:
        ok = ok & (key_pos[None, None, :] <= q_slots[:, :, None])
    if q_segments is not None:
        same = q_segments[:, :, None] == kv_segments[:, None, :]
        ok = ok & (same | (kv_segments[:, None, :] == ANY_SEGMENT))
    return ok


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_axis(x, axis: int, size: int, value):
    if x is None or x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def _live_tiles(key_valid, q_slots, q_real, q_segments, kv_segments, causal, bq, bk):
    """bool [nq, nk]: True where some batch row has a usable (query, key) pair in the tile.

    Conservative: a live tile may still be fully masked (it is then computed and masks
    itself); a dead tile is certainly fully masked.
    """
    b, tp = q_slots.shape
    sp = key_valid.shape[1]
    nq, nk = tp // bq, sp // bk
    kv_any = key_valid.reshape(b, nk, bk).any(-1)  # [B, nk]
    live = kv_any[:, None, :] & q_real.reshape(1, nq, bq).any(-1)[:, :, None]
    if causal:
        slot = jnp.where(q_real[None], q_slots, -1).reshape(b, nq, bq).max(-1)  # [B, nq]
        first_key = jnp.arange(nk) * bk
        live = live & (first_key[None, None, :] <= slot[:, :, None])
    if q_segments is not None:
        qs = q_segments.reshape(b, nq, bq)
        real = q_real.reshape(1, nq, bq)
        q_lo = jnp.where(real, qs, _INT_MAX).min(-1)
        q_hi = jnp.where(real, qs, _INT_MIN).max(-1)
        ks = kv_segments.reshape(b, nk, bk)
        valid = key_valid.reshape(b, nk, bk)
        shared = ks == ANY_SEGMENT
        wild = (valid & shared).any(-1)  # [B, nk]
        own = valid & ~shared
        k_lo = jnp.where(own, ks, _INT_MAX).min(-1)
        k_hi = jnp.where(own, ks, _INT_MIN).max(-1)
        meet = (q_lo[:, :, None] <= k_hi[:, None, :]) & (k_lo[:, None, :] <= q_hi[:, :, None])
        live = live & (wild[:, None, :] | meet)
    return live.any(0)


class _Tiles:
    """Query-side operands cut into tiles: [nq, B, Hkv, G * bq, ...] rows per tile."""

    def __init__(self, b, hkv, g, bq, tp):
        self.b, self.hkv, self.g, self.bq, self.nq = b, hkv, g, bq, tp // bq

    def to_tiles(self, x):  # [B, Tp, H, D] -> [nq, B, Hkv, G*bq, D]
        d = x.shape[-1]
        x = x.reshape(self.b, self.nq, self.bq, self.hkv, self.g, d).transpose(1, 0, 3, 4, 2, 5)
        return x.reshape(self.nq, self.b, self.hkv, self.g * self.bq, d)

    def from_tiles(self, x):  # inverse of to_tiles
        d = x.shape[-1]
        x = x.reshape(self.nq, self.b, self.hkv, self.g, self.bq, d).transpose(1, 0, 4, 2, 3, 5)
        return x.reshape(self.b, self.nq * self.bq, self.hkv * self.g, d)


def _tile_scores(qi, kj, mask_ij, g, scale):
    """Masked float32 scores [B, Hkv, G*bq, bk] of one tile; masked entries are -inf.

    As the explicit path: the product and the scaling in the input dtype, then float32.
    """
    s = jnp.einsum("bkmd,bksd->bkms", qi, kj) * jnp.asarray(scale, qi.dtype)
    b, hkv, m, bk = s.shape
    s = s.astype(jnp.float32).reshape(b, hkv, g, m // g, bk)
    s = jnp.where(mask_ij[:, None, None], s, -jnp.inf)
    return s.reshape(b, hkv, m, bk)


def _tile_mask(key_valid, q_slots, q_segments, kv_segments, causal, i, j, bq, bk):
    sl_k = lambda x: jax.lax.dynamic_slice_in_dim(x, j * bk, bk, axis=1)
    sl_q = lambda x: jax.lax.dynamic_slice_in_dim(x, i * bq, bq, axis=1)
    return allowed_mask(
        sl_k(key_valid), j * bk + jnp.arange(bk), sl_q(q_slots),
        None if q_segments is None else sl_q(q_segments),
        None if kv_segments is None else sl_k(kv_segments), causal)


def _fwd_impl(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, bq, bk, t_real):
    b, tp, h, d = q.shape
    hkv, sp = k.shape[1], k.shape[2]
    g = h // hkv
    nk = sp // bk
    scale = d ** -0.5
    tiles = _Tiles(b, hkv, g, bq, tp)
    qt = tiles.to_tiles(q)
    q_real = jnp.arange(tp) < t_real
    live = _live_tiles(key_valid, q_slots, q_real, q_segments, kv_segments, causal, bq, bk)
    rows = g * bq

    def q_tile(i):
        qi = qt[i]

        def k_step(j, carry):
            def compute(carry):
                m, l, acc = carry
                kj = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
                vj = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
                mask = _tile_mask(key_valid, q_slots, q_segments, kv_segments, causal, i, j, bq, bk)
                s = _tile_scores(qi, kj, mask, g, scale)
                m_new = jnp.maximum(m, s.max(-1))
                # A row with no allowed key so far keeps m = -inf; shifting it by 0 instead
                # makes exp() give exact zeros rather than NaN from (-inf) - (-inf).
                shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
                alpha = jnp.exp(m - shift)
                p = jnp.exp(s - shift[..., None])
                l = alpha * l + p.sum(-1)
                pv = jnp.einsum("bkms,bksd->bkmd", p.astype(v.dtype), vj,
                                preferred_element_type=jnp.float32)
                return m_new, l, alpha[..., None] * acc + pv
            return jax.lax.cond(live[i, j], compute, lambda c: c, carry)

        init = (jnp.full((b, hkv, rows), -jnp.inf, jnp.float32),
                jnp.zeros((b, hkv, rows), jnp.float32),
                jnp.zeros((b, hkv, rows, d), jnp.float32))
        m, l, acc = jax.lax.fori_loop(0, nk, k_step, init)
        has_key = l > 0
        out = acc / jnp.where(has_key, l, 1.0)[..., None]
        # lse only feeds exp(s - lse) on allowed entries, which a keyless row has none of.
        lse = jnp.where(has_key, m + jnp.log(jnp.where(has_key, l, 1.0)), 0.0)
        return out, lse

    out_t, lse_t = jax.lax.map(q_tile, jnp.arange(tiles.nq))
    return out_t, lse_t, tiles


def _bwd_impl(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, bq, bk, t_real,
              out, lse, dout):
    """dq, dk, dv, recomputing each tile's probabilities; out [B, Tp, H, D] and lse
    [B, Hkv, G, Tp] as the forward left them. The tiles [bq x bk] are the backward's own:
    its products run fastest at other shapes than the forward's."""
    b, tp, h, d = q.shape
    hkv, sp = k.shape[1], k.shape[2]
    g = h // hkv
    nk = sp // bk
    scale = d ** -0.5
    f32 = jnp.float32
    tiles = _Tiles(b, hkv, g, bq, tp)
    qt = tiles.to_tiles(q)
    q_real = jnp.arange(tp) < t_real
    live = _live_tiles(key_valid, q_slots, q_real, q_segments, kv_segments, causal, bq, bk)
    do_t = tiles.to_tiles(dout.astype(f32))
    delta_t = (do_t * tiles.to_tiles(out.astype(f32))).sum(-1)  # rowsum(dO * O), flash-attention 2
    lse_t = _lse_to_tiles(lse, bq)

    def k_tile(dq_t, j):
        kj = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
        vj = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)
        kf, vf = kj.astype(f32), vj.astype(f32)

        def q_step(i, carry):
            def compute(dk, dv):
                qi = qt[i]
                mask = _tile_mask(key_valid, q_slots, q_segments, kv_segments, causal, i, j, bq, bk)
                s = _tile_scores(qi, kj, mask, g, scale)
                p = jnp.exp(s - lse_t[i][..., None])  # masked entries: exp(-inf) = 0
                doi = do_t[i]
                dv = dv + jnp.einsum("bkms,bkmd->bksd", p, doi)
                dp = jnp.einsum("bkmd,bksd->bkms", doi, vf)
                ds = p * (dp - delta_t[i][..., None]) * scale
                dk = dk + jnp.einsum("bkms,bkmd->bksd", ds, qi.astype(f32))
                return jnp.einsum("bkms,bksd->bkmd", ds, kf), dk, dv

            def skip(dk, dv):
                return jnp.zeros(qt.shape[1:], f32), dk, dv

            dq_t, dk, dv = carry
            # The whole dq buffer stays out of the cond, which could otherwise copy it.
            dq_i, dk, dv = jax.lax.cond(live[i, j], compute, skip, dk, dv)
            return dq_t.at[i].add(dq_i), dk, dv

        zeros = jnp.zeros((b, hkv, bk, d), f32)
        dq_t, dk, dv = jax.lax.fori_loop(0, tiles.nq, q_step, (dq_t, zeros, zeros))
        return dq_t, (dk, dv)

    dq_t, (dk, dv) = jax.lax.scan(k_tile, jnp.zeros_like(qt, dtype=f32), jnp.arange(nk))
    # [nk, B, Hkv, bk, D] -> [B, Hkv, S, D]
    dk = dk.transpose(1, 2, 0, 3, 4).reshape(b, hkv, sp, d)
    dv = dv.transpose(1, 2, 0, 3, 4).reshape(b, hkv, sp, d)
    return tiles.from_tiles(dq_t).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


def _lse_from_tiles(lse_t, g):  # [nq, B, Hkv, G*bq] -> [B, Hkv, G, Tp]
    nq, b, hkv, rows = lse_t.shape
    bq = rows // g
    return lse_t.reshape(nq, b, hkv, g, bq).transpose(1, 2, 3, 0, 4).reshape(b, hkv, g, nq * bq)


def _lse_to_tiles(lse, bq):  # inverse of _lse_from_tiles, for tiles of bq queries
    b, hkv, g, tp = lse.shape
    return lse.reshape(b, hkv, g, tp // bq, bq).transpose(3, 0, 1, 2, 4).reshape(tp // bq, b, hkv, g * bq)


# Bytes of float32 scores one tile step may hold, across the batch rows it takes at once.
# A [B, H, bq, bk] tile past the CPU caches makes every softmax pass stream from memory:
# 8 ViT frames x 4 heads x 256 x 512 ran forward 1.6x faster in steps of 2 frames (4 MiB)
# than all 8 at once (16 MiB), and 8 causal prompts x 8 heads at 1024 1.4x faster; at 2
# frames or prompts (the budget's whole batch) smaller steps were 5-15% slower.
TILE_BYTES = 4 << 20


def _batch_group(b: int, heads: int, bq: int, bk: int, budget: int) -> int:
    """The largest divisor of the batch whose [group, heads, bq, bk] float32 tile fits the budget."""
    tile = heads * bq * bk * 4
    return max(d for d in range(1, b + 1) if b % d == 0 and (d == 1 or d * tile <= budget))


def _by_batch_groups(fn, group: int, *arrays):
    """fn over the arrays' leading batch axis in groups of `group` rows, one group at a time."""
    b = arrays[0].shape[0]
    if group == b:
        return fn(*arrays)
    split = lambda x: None if x is None else x.reshape((b // group, group) + x.shape[1:])  # noqa: E731
    outs = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in arrays))
    return jax.tree.map(lambda x: x.reshape((b,) + x.shape[2:]), outs)


def _forward(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, bq, bk, t_real):
    """(out [B, Tp, H, D] in q.dtype, lse [B, Hkv, G, Tp])."""
    def fn(q, k, v, key_valid, q_slots, q_segments, kv_segments):
        out_t, lse_t, tiles = _fwd_impl(q, k, v, key_valid, q_slots, q_segments, kv_segments,
                                           causal, bq, bk, t_real)
        return tiles.from_tiles(out_t).astype(q.dtype), _lse_from_tiles(lse_t, tiles.g)
    group = _batch_group(q.shape[0], q.shape[2], bq, bk, TILE_BYTES)
    return _by_batch_groups(fn, group, q, k, v, key_valid, q_slots, q_segments, kv_segments)


@partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _blockwise(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, tiling, t_real):
    return _forward(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, *tiling[:2], t_real)[0]


def _blockwise_fwd(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, tiling, t_real):
    # The output is saved as rounded to the output dtype: the backward's rowsum(dO * O)
    # then uses the same O the caller saw.
    out, lse = _forward(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, *tiling[:2], t_real)
    return out, (q, k, v, key_valid, q_slots, q_segments, kv_segments, out, lse)


def _blockwise_bwd(causal, tiling, t_real, res, dout):
    q, k, v, key_valid, q_slots, q_segments, kv_segments, out, lse = res
    bwd_q, bwd_k = tiling[2:]

    def fn(q, k, v, key_valid, q_slots, q_segments, kv_segments, out, lse, dout):
        return _bwd_impl(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal,
                         bwd_q, bwd_k, t_real, out, lse, dout)
    group = _batch_group(q.shape[0], q.shape[2], bwd_q, bwd_k, TILE_BYTES)
    dq, dk, dv = _by_batch_groups(fn, group, q, k, v, key_valid, q_slots, q_segments, kv_segments, out, lse, dout)
    return dq, dk, dv, None, None, None, None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def _tile_pair(n: int, fwd: int, bwd: int, what: str):
    """(forward tile, backward tile) along an axis of n, and the padded length both divide.

    The smaller tile is balanced: n split into as few tiles of at most min(fwd, bwd) as it
    takes, each rounded up to 8 rows, so padding stays under 8 rows per tile (640 keys in
    tiles of 256 -> 3 x 216, not 3 x 256). The larger is the largest multiple of it, up to
    max(fwd, bwd), that divides the padded length.
    """
    lo, hi = min(fwd, bwd), max(fwd, bwd)
    if lo <= 0 or hi % lo:
        raise ValueError(f"blockwise_attention: {what} tiles {fwd} (forward) and {bwd} (backward): "
                         "both must be positive and the larger a multiple of the smaller")
    lo_n = _round_up(-(-n // -(-n // lo)), 8)
    count = -(-n // lo_n)
    m = max(m for m in range(1, hi // lo + 1) if count % m == 0)
    hi_n = lo_n * m
    return ((hi_n, lo_n) if fwd >= bwd else (lo_n, hi_n)), lo_n * count


def blockwise_attention(q, k, v, key_valid, q_slots, q_segments=None, kv_segments=None, *,
                        causal: bool, block_q: int = 256, block_k: int | None = None,
                        bwd_block_q: int = 256, bwd_block_k: int = 256):
    """Attention of q [B, T, H, D] over heads-major k, v [B, Hkv, S, D]; returns [B, T, H, D].

    key_valid bool [B, S]; q_slots int32 [B, T] (the slot of each query, used when causal);
    q_segments [B, T] / kv_segments [B, S] int32 or None. Differentiable in q, k, v.
    block_q / block_k tile the forward, bwd_block_q / bwd_block_k the backward; of
    block_q and bwd_block_q the larger must be a multiple of the smaller, and so for keys.
    The defaults are the fastest of a sweep on this project's 2-core CPU (fp32, D=64):
    block_k 512 without a causal mask (the ViT's full attention over 1024 keys, 1.7x
    faster than 256 x 256 tiles) and 256 with one (at 1024 keys a causal 512-key tile
    computes half its scores in vain; at 4096 both are the same).
    """
    b, t, h, d = q.shape
    s = k.shape[2]
    if block_k is None:
        block_k = 256 if causal else 512
    (fq, bq), tp = _tile_pair(t, block_q, bwd_block_q, "query")
    (fk, bk), sp = _tile_pair(s, block_k, bwd_block_k, "key")
    # Padded queries sit at slot -1 (before every key) and padded keys are invalid, so
    # padding never enters a real row; padded rows are cut off below.
    q = _pad_axis(q, 1, tp, 0)
    q_slots = _pad_axis(q_slots, 1, tp, -1)
    q_segments = _pad_axis(q_segments, 1, tp, 0)
    k, v = _pad_axis(k, 2, sp, 0), _pad_axis(v, 2, sp, 0)
    key_valid = _pad_axis(key_valid, 1, sp, False)
    kv_segments = _pad_axis(kv_segments, 1, sp, 0)
    out = _blockwise(q, k, v, key_valid, q_slots, q_segments, kv_segments, causal, (fq, fk, bq, bk), t)
    return out[:, :t]
