"""Attention over a prefix shared by groups of rows (a prompt's cache under its G completions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models.attention import attention

P, G, SP, T, H, HKV, D = 2, 3, 11, 6, 4, 2, 8
N = P * G


def inputs(seed=0):
    r = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(r.standard_normal(s), jnp.float32)  # noqa: E731
    q, k, v = f(N, T, H, D), f(N, HKV, T, D), f(N, HKV, T, D)
    pk, pv = f(P, HKV, SP, D), f(P, HKV, SP, D)
    p_valid = np.ones((P, SP), bool)
    p_valid[1, :4] = False  # prompt 1 is left-padded by 4
    own_valid = np.ones((N, T), bool)
    own_valid[4, 3:] = False  # completion 4's tail is padding
    return q, k, v, pk, pv, jnp.asarray(p_valid), jnp.asarray(own_valid)


def numpy_reference(q, k, v, pk, pv, p_valid, own_valid, q_slots=None):
    """float64 softmax over (valid prefix keys of the row's prompt, own valid keys s <= slot of t)."""
    q, k, v, pk, pv = (np.asarray(a, np.float64) for a in (q, k, v, pk, pv))
    p_valid, own_valid = np.asarray(p_valid), np.asarray(own_valid)
    slots = np.broadcast_to(np.arange(q.shape[1]), q.shape[:2]) if q_slots is None else np.asarray(q_slots)
    out = np.zeros(q.shape)
    for n in range(N):
        b = n // G
        for h in range(H):
            kh = h // (H // HKV)
            keys = np.concatenate([pk[b, kh][p_valid[b]], k[n, kh]])
            vals = np.concatenate([pv[b, kh][p_valid[b]], v[n, kh]])
            for t in range(q.shape[1]):
                ok = np.concatenate([np.ones(p_valid[b].sum(), bool),
                                     own_valid[n] & (np.arange(k.shape[2]) <= slots[n, t])])
                if not ok.any():
                    continue
                s = keys[ok] @ q[n, t, h] / np.sqrt(D)
                w = np.exp(s - s.max())
                out[n, t, h] = (w / w.sum()) @ vals[ok]
    return out


def run(impl, q, k, v, pk, pv, p_valid, own_valid):
    return attention(q, k, v, key_valid=own_valid, causal=True, prefix=(pk, pv, p_valid), implementation=impl)[0]


def repeated(q, k, v, pk, pv, p_valid, own_valid):
    """The oracle for gradients: explicit attention over the prefix copied for every row."""
    cat = lambda a, b, axis: jnp.concatenate([jnp.repeat(a, G, axis=0), b], axis=axis)  # noqa: E731
    return attention(q, cat(pk, k, 2), cat(pv, v, 2), key_valid=cat(p_valid, own_valid, 1),
                     q_slots=SP + jnp.arange(T), causal=True, implementation="explicit")[0]


@pytest.mark.parametrize("impl", ["explicit", "auto", "xla", "blockwise"])
def test_prefix_matches_numpy_and_its_gradients_match_the_repeated_prefix(impl):
    args = inputs()
    out = jax.jit(lambda *a: run(impl, *a))(*args)
    np.testing.assert_allclose(np.asarray(out), numpy_reference(*args), atol=1e-5, rtol=1e-5)
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(out.shape), jnp.float32)
    diff = (0, 1, 2, 3, 4)
    got = jax.jit(jax.grad(lambda *a: jnp.sum(run(impl, *a) * ct), argnums=diff))(*args)
    ref = jax.jit(jax.grad(lambda *a: jnp.sum(repeated(*a) * ct), argnums=diff))(*args)
    for name, a, b in zip(("q", "k", "v", "prefix k", "prefix v"), got, ref):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and np.isfinite(a).all(), name
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), (name, np.abs(a - b).max())


@pytest.mark.parametrize("impl", ["explicit", "auto", "xla", "blockwise"])
def test_decode_steps_over_an_own_cache(impl):
    """A sampler step: 2 queries per row at own-cache slots that differ by row, over a
    9-slot own cache whose later slots are not written yet (causality hides them)."""
    q, _, _, pk, pv, p_valid, _ = inputs(3)
    r = np.random.default_rng(4)
    k = jnp.asarray(r.standard_normal((N, HKV, 9, D)), jnp.float32)
    v = jnp.asarray(r.standard_normal((N, HKV, 9, D)), jnp.float32)
    q = q[:, :2]
    slots = jnp.asarray(np.arange(2)[None] + np.arange(N)[:, None] % 4, jnp.int32)  # rows at slots 0..3
    own_valid = jnp.ones((N, 9), bool)
    f = jax.jit(lambda q, k, v: attention(q, k, v, key_valid=own_valid, q_slots=slots, causal=True,
                                          prefix=(pk, pv, p_valid), implementation=impl)[0])
    np.testing.assert_allclose(np.asarray(f(q, k, v)), numpy_reference(q, k, v, pk, pv, p_valid, own_valid, slots),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["explicit", "xla", "blockwise"])
def test_a_row_with_no_key_gives_zero(impl):
    q, k, v, pk, pv, p_valid, own_valid = inputs(2)
    p_valid = p_valid.at[1].set(False)  # prompt 1 has no valid key at all...
    own_valid = own_valid.at[G].set(False)  # ...and its first completion none of its own
    out = np.asarray(jax.jit(lambda *a: run(impl, *a))(q, k, v, pk, pv, p_valid, own_valid))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[G], 0.0)
    ref = numpy_reference(q, k, v, pk, pv, p_valid, own_valid)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_bad_prefix_calls_raise_clearly():
    q, k, v, pk, pv, p_valid, own_valid = inputs()
    with pytest.raises(ValueError, match="P dividing the 6 query rows"):
        attention(q, k, v, key_valid=own_valid, causal=True, prefix=(pk[:1].repeat(4, 0), pv[:1].repeat(4, 0),
                                                                     jnp.ones((4, SP), bool)))
    with pytest.raises(ValueError, match=r"prefix key_valid must be bool \[2, 11\]"):
        attention(q, k, v, key_valid=own_valid, causal=True, prefix=(pk, pv, p_valid[:, :5]))
    with pytest.raises(ValueError, match="causal=True"):
        attention(q, k, v, key_valid=own_valid, causal=False, prefix=(pk, pv, p_valid))
    with pytest.raises(ValueError, match="S=5 keys != T=6 queries needs q_slots"):
        attention(q, k[:, :, :5], v[:, :, :5], key_valid=own_valid[:, :5], causal=True,
                  prefix=(pk, pv, p_valid))


@pytest.mark.parametrize("impl", ["explicit", "xla", "blockwise"])
def test_packed_rows_with_segments_equal_their_completions_in_rows_of_their_own(impl):
    """Two completions of a prompt packed in one row (segments 1 and 2) attend as they would alone:
    the prompt's keys, then their own earlier tokens only (mmjax.rl.packing). explicit reads the
    prompt where it lies; the others join it before the row's keys as a segment every query sees."""
    from mmjax.models.attention_prefix import prefix_attention
    q, k, v, pk, pv, p_valid, _ = inputs(3)
    # Prompt 0's completions 0 (3 tokens) and 1 (2 tokens), each in its own row padded to T ...
    lengths = (3, 2)
    own_valid = jnp.asarray(np.arange(T)[None] < np.asarray(lengths)[:, None])
    q2, k2, v2 = q[:2], k[:2], v[:2]
    alone, _ = prefix_attention(q2, k2, v2, own_valid, pk[:1], pv[:1], p_valid[:1], jnp.tile(jnp.arange(T), (2, 1)))
    # ... and both in one packed row: tokens [c0 t0, c0 t1, c0 t2, c1 t0, c1 t1, pad].
    take = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (0, 5)]
    pq = jnp.stack([q2[r, t] for r, t in take])[None]
    pk_own = jnp.stack([k2[r, :, t] for r, t in take], axis=1)[None]
    pv_own = jnp.stack([v2[r, :, t] for r, t in take], axis=1)[None]
    segments = jnp.asarray([[1, 1, 1, 2, 2, 0]])
    packed, _ = attention(pq, pk_own, pv_own, key_valid=segments > 0, causal=True,
                          prefix=(pk[:1], pv[:1], p_valid[:1]), q_segments=segments, kv_segments=segments,
                          implementation=impl)
    for j, (r, t) in enumerate(take[:5]):
        np.testing.assert_allclose(np.asarray(packed[0, j]), np.asarray(alone[r, t]), rtol=1e-5, atol=1e-6)
