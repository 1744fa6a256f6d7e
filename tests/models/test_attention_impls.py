"""The attention implementations behind mmjax.models.attention.attention agree with explicit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models.attention import IMPLEMENTATIONS, attention, choose_implementation
from mmjax.models.attention_blockwise import ANY_SEGMENT, _tile_pair, blockwise_attention

ROOT = Path(__file__).resolve().parents[2]
B, H, HKV, D = 2, 4, 2, 16


def qkv(t, s, seed=0, d=D, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    q = jnp.asarray(r.standard_normal((B, t, H, d)), dtype)
    k = jnp.asarray(r.standard_normal((B, HKV, s, d)), dtype)
    v = jnp.asarray(r.standard_normal((B, HKV, s, d)), dtype)
    return q, k, v


def left_padded(s, pads):
    return jnp.asarray(np.arange(s)[None, :] >= np.asarray(pads)[:, None])


def run(impl, q, k, v, **kw):
    return jax.jit(lambda q, k, v: attention(q, k, v, implementation=impl, **kw))(q, k, v)


def assert_close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.isfinite(a).all() and np.isfinite(b).all()
    np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


def tiles_case(t, tile, n_tiles):
    """Vision-tower style packing: rows of `tile`-token tiles, the tail padded with segment -1."""
    seg = np.full((B, t), -1, np.int32)
    for b in range(B):
        n = n_tiles - b  # the second row holds one tile fewer: more padding
        seg[b, :n * tile] = np.repeat(np.arange(n), tile)
    seg = jnp.asarray(seg)
    return dict(key_valid=seg >= 0, q_segments=seg, kv_segments=seg)


def packed_after_prompt(prompt=16, t=40):
    """Completions packed in rows after their prompt's keys (mmjax.rl.packing): the prompt's keys
    (segment ANY_SEGMENT) are every segment's, a completion's own keys only its segment's."""
    seg = np.zeros((B, t), np.int32)
    seg[0, :13], seg[0, 13:30], seg[0, 30:37] = 1, 2, 3  # 3 completions, 3 empty slots
    seg[1, :25], seg[1, 25:34] = 1, 2
    prompt_valid = left_padded(prompt, [0, 3])
    kv_seg = np.concatenate([np.full((B, prompt), ANY_SEGMENT, np.int32), seg], 1)
    return t, prompt + t, dict(key_valid=jnp.concatenate([prompt_valid, jnp.asarray(seg > 0)], 1), causal=True,
                               q_slots=jnp.asarray(prompt + np.arange(t), jnp.int32)[None].repeat(B, 0),
                               q_segments=jnp.asarray(seg), kv_segments=jnp.asarray(kv_seg))


# --- forward agreement ------------------------------------------------------------------

CASES = {
    # Left padding of 0 and 5 keys: the padded queries of row 1 have no key at all.
    "causal_left_padded": lambda: (40, 40, dict(key_valid=left_padded(40, [0, 5]), causal=True)),
    # A decode chunk of 12 queries at cache slots 20..31 (row 0) and 24..35 (row 1) of 48.
    "cache_offset": lambda: (12, 48, dict(
        key_valid=left_padded(48, [3, 0]), causal=True,
        q_slots=jnp.asarray(np.arange(12)[None] + np.array([[20], [24]]), jnp.int32))),
    "segments": lambda: (48, 48, tiles_case(48, 10, 4)),
    "causal_segments": lambda: (48, 48, dict(causal=True, **tiles_case(48, 10, 4))),
    # Row 1 has no valid key at all: every row of it is fully masked.
    "all_masked_row": lambda: (24, 24, dict(
        key_valid=jnp.asarray(np.stack([np.ones(24, bool), np.zeros(24, bool)])), causal=True)),
    "packed_after_prompt": packed_after_prompt,
}


@pytest.mark.parametrize("impl", ["xla", "blockwise"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_explicit(case, impl):
    t, s, kw = CASES[case]()
    q, k, v = qkv(t, s)
    ref, _ = run("explicit", q, k, v, **kw)
    out, masses = run(impl, q, k, v, **kw)
    assert masses is None and out.shape == q.shape and out.dtype == q.dtype
    assert_close(out, ref)


@pytest.mark.parametrize("case", sorted(CASES))
def test_blockwise_small_tiles_match_explicit(case):
    # Tiles of 8 queries x 16 keys: many tiles per row, partial last tiles, skipped tiles.
    t, s, kw = CASES[case]()
    q, k, v = qkv(t, s, seed=1)
    ref, _ = run("explicit", q, k, v, **kw)
    slots = kw.get("q_slots", jnp.arange(t, dtype=jnp.int32))
    out = jax.jit(lambda q, k, v: blockwise_attention(
        q, k, v, kw["key_valid"], jnp.broadcast_to(slots, (B, t)), kw.get("q_segments"),
        kw.get("kv_segments"), causal=kw.get("causal", False), block_q=8, block_k=16))(q, k, v)
    assert_close(out, ref)


def test_fully_masked_rows_are_zero_everywhere():
    t, s, kw = CASES["causal_left_padded"]()
    q, k, v = qkv(t, s)
    outs = {impl: np.asarray(run(impl, q, k, v, **kw)[0]) for impl in ("explicit", "xla", "blockwise")}
    for out in outs.values():
        assert np.isfinite(out).all()
        np.testing.assert_array_equal(out[1, :5], 0.0)  # the 5 left-padded queries of row 1
        assert np.abs(out[1, 5:]).min() > 0  # and only those


SPLASH_T = 128


def splash_cases():
    t = SPLASH_T
    seg = tiles_case(t, 30, 4)
    return {
        "causal_left_padded": dict(key_valid=left_padded(t, [0, 37]), causal=True),
        "segments": seg,
        "causal_segments": dict(causal=True, **seg),
        "all_masked_row": dict(key_valid=jnp.asarray(np.stack([np.ones(t, bool), np.zeros(t, bool)])),
                               causal=True),
    }


def test_splash_interpret_matches_explicit():
    q, k, v = qkv(SPLASH_T, SPLASH_T, d=64)
    for name, kw in splash_cases().items():
        ref, _ = run("explicit", q, k, v, **kw)
        out, _ = run("splash", q, k, v, **kw)
        assert out.shape == q.shape, name
        assert_close(out, ref)


# --- gradients --------------------------------------------------------------------------

def grads(impl, q, k, v, kw):
    w = jnp.cos(jnp.arange(q.size, dtype=jnp.float32).reshape(q.shape))  # a generic cotangent

    def loss(q, k, v):
        return (attention(q, k, v, implementation=impl, **kw)[0] * w).sum()

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize("impl", ["xla", "blockwise"])
@pytest.mark.parametrize("case", ["causal_left_padded", "cache_offset", "causal_segments", "packed_after_prompt"])
def test_gradients_match_explicit(case, impl):
    t, s, kw = CASES[case]()
    q, k, v = qkv(t, s, seed=2)
    ref = grads("explicit", q, k, v, kw)
    got = grads(impl, q, k, v, kw)
    for name, a, b in zip("qkv", got, ref):
        a, b = np.asarray(a), np.asarray(b)
        assert np.isfinite(a).all(), name
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), (name, np.abs(a - b).max())


# (forward q, forward k, backward q, backward k) tiles: the same, larger forward tiles, and
# backward tiles that are larger on one axis and smaller on the other.
TILINGS = [(8, 16, 8, 16), (16, 32, 8, 16), (8, 16, 16, 8)]


@pytest.mark.parametrize("tiling", TILINGS, ids=lambda x: "x".join(map(str, x)))
@pytest.mark.parametrize("case", ["cache_offset", "causal_segments", "packed_after_prompt"])
def test_blockwise_gradient_with_small_tiles(case, tiling):
    t, s, kw = CASES[case]()
    q, k, v = qkv(t, s, seed=3)
    ref = grads("explicit", q, k, v, kw)
    slots = jnp.broadcast_to(kw.get("q_slots", jnp.arange(t, dtype=jnp.int32)), (B, t))
    fq, fk, bq, bk = tiling

    def loss(q, k, v):
        out = blockwise_attention(q, k, v, kw["key_valid"], slots, kw.get("q_segments"), kw.get("kv_segments"),
                                  causal=True, block_q=fq, block_k=fk, bwd_block_q=bq, bwd_block_k=bk)
        return (out * jnp.cos(jnp.arange(q.size, dtype=jnp.float32).reshape(q.shape))).sum()

    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(got, ref):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * np.abs(np.asarray(b)).max()


@pytest.mark.parametrize("n,fwd,bwd,tiles,padded", [
    (1024, 512, 256, (512, 256), 1024),  # the ViT's full attention: both divide
    (4096, 512, 256, (512, 256), 4096),
    (320, 512, 256, (320, 160), 320),    # two balanced tiles, no padding
    (640, 512, 256, (216, 216), 648),    # three tiles; 512 would pad 640 to 1024
    (290, 256, 256, (152, 152), 304),
    (40, 8, 256, (8, 40), 40),
])
def test_blockwise_tiles_are_balanced(n, fwd, bwd, tiles, padded):
    assert _tile_pair(n, fwd, bwd, "key") == (tiles, padded)
    assert padded - n < 8 * (padded // min(tiles))


@pytest.mark.parametrize("case", ["cache_offset", "causal_segments"])
def test_blockwise_in_batch_groups_matches_explicit(case, monkeypatch):
    # A tile budget of one byte: forward and backward take the batch one row at a time.
    import mmjax.models.attention_blockwise as bw
    monkeypatch.setattr(bw, "TILE_BYTES", 1)
    assert bw._batch_group(B, H, 8, 16, 1) == 1
    t, s, kw = CASES[case]()
    q, k, v = qkv(t, s, seed=4)
    assert_close(run("blockwise", q, k, v, **kw)[0], run("explicit", q, k, v, **kw)[0])
    for a, b in zip(grads("blockwise", q, k, v, kw), grads("explicit", q, k, v, kw)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 1e-5 * np.abs(np.asarray(b)).max()


def test_blockwise_rejects_tiles_that_do_not_nest():
    q, k, v = qkv(48, 48)
    valid = jnp.ones((B, 48), bool)
    slots = jnp.broadcast_to(jnp.arange(48, dtype=jnp.int32), (B, 48))
    with pytest.raises(ValueError, match=r"key tiles 24 \(forward\) and 16 \(backward\)"):
        blockwise_attention(q, k, v, valid, slots, causal=True, block_k=24, bwd_block_k=16)


def test_blockwise_backward_memory_is_not_quadratic():
    # At T = S = 2048 one [B, H, T, S] float32 score array is 128 MiB; explicit's backward
    # keeps at least that, blockwise only tiles.
    n = 2048
    q, k, v = (jnp.zeros(x.shape, jnp.float32) for x in qkv(n, n))
    key_valid = jnp.ones((B, n), bool)
    scores = B * H * n * n * 4

    def temp(impl):
        f = jax.grad(lambda q, k, v: attention(q, k, v, key_valid=key_valid, causal=True,
                                               implementation=impl)[0].sum(), argnums=(0, 1, 2))
        return jax.jit(f).lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

    assert temp("explicit") >= scores
    assert temp("blockwise") < scores / 4


# --- capture, auto, errors --------------------------------------------------------------

def test_key_groups_masses_explicit_and_auto():
    t, s, kw = CASES["causal_left_padded"]()
    q, k, v = qkv(t, s)
    groups = jnp.stack([jnp.arange(s) < 10, jnp.arange(s) >= 10], -1).astype(jnp.float32)
    groups = jnp.broadcast_to(groups, (B, s, 2))
    out, masses = run("explicit", q, k, v, key_groups=groups, **kw)
    auto_out, auto_masses = run("auto", q, k, v, key_groups=groups, **kw)
    assert masses.shape == (B, t, H, 2)
    assert_close(auto_masses, masses)
    assert_close(auto_out, out)
    m = np.asarray(masses)
    np.testing.assert_allclose(m[1, 5:].sum(-1), 1.0, atol=1e-5)  # rows with keys: all mass
    np.testing.assert_array_equal(m[1, :5], 0.0)  # keyless rows: none


@pytest.mark.parametrize("impl", ["xla", "cudnn", "splash", "blockwise"])
def test_key_groups_with_other_implementation_raises(impl):
    q, k, v = qkv(8, 8)
    groups = jnp.ones((B, 8, 2))
    with pytest.raises(ValueError, match="key_groups.*explicit"):
        attention(q, k, v, key_valid=jnp.ones((B, 8), bool), key_groups=groups, implementation=impl)


def test_unknown_implementation_lists_the_allowed_names():
    q, k, v = qkv(8, 8)
    with pytest.raises(ValueError, match="flash.*auto, explicit, xla, cudnn, splash, blockwise"):
        attention(q, k, v, key_valid=jnp.ones((B, 8), bool), implementation="flash")


def test_unavailable_implementations_raise_clearly():
    q, k, v = qkv(12, 48)
    kv = jnp.ones((B, 48), bool)
    with pytest.raises(ValueError, match="cudnn.*GPU"):
        attention(q, k, v, key_valid=kv, implementation="cudnn")
    with pytest.raises(ValueError, match="splash.*S == T"):
        attention(q, k, v, key_valid=kv, implementation="splash")
    with pytest.raises(ValueError, match="q_slots"):
        attention(q, k, v, key_valid=kv, causal=True)
    q2, k2, v2 = qkv(SPLASH_T, SPLASH_T)
    with pytest.raises(ValueError, match="splash.*q_slots=None"):
        attention(q2, k2, v2, key_valid=jnp.ones((B, SPLASH_T), bool), causal=True,
                  q_slots=jnp.arange(SPLASH_T), implementation="splash")
    with pytest.raises(ValueError, match="key_valid"):
        attention(q, k, v, key_valid=jnp.ones((B, 47), bool))


def test_auto_choices():
    def pick(backend, t, s, d=64, dtype=jnp.bfloat16, static_causal=True, key_groups=False):
        return choose_implementation(backend=backend, t=t, s=s, head_dim=d, dtype=dtype,
                                     static_causal=static_causal, key_groups=key_groups)

    for backend in ("cpu", "gpu", "tpu"):
        assert pick(backend, 1, 4096) == "explicit"  # decode
        assert pick(backend, 2048, 2048, key_groups=True) == "explicit"  # capture
    assert pick("cpu", 256, 256, dtype=jnp.float32) == "explicit"
    assert pick("cpu", 16, 4096, dtype=jnp.float32) == "explicit"  # a short chunk over a cache
    assert pick("cpu", 2048, 2048, dtype=jnp.float32) == "blockwise"
    assert pick("cpu", 512, 512, dtype=jnp.float32) == "blockwise"
    assert pick("cpu", 128, 4096, dtype=jnp.float32) == "blockwise"  # a prefill chunk over a cache
    assert pick("gpu", 2048, 2048) == "cudnn"
    assert pick("gpu", 2048, 2048, dtype=jnp.float16) == "cudnn"
    assert pick("gpu", 2048, 2048, dtype=jnp.float32) == "xla"
    assert pick("gpu", 2048, 2048, d=72 + 4) == "xla"  # not a multiple of 8
    assert pick("gpu", 2048, 2048, d=512) == "xla"
    assert pick("tpu", 2048, 2048) == "splash"
    assert pick("tpu", 100, 100) == "xla"  # no block divides 100
    assert pick("tpu", 512, 1024) == "xla"  # a cache offset
    assert pick("tpu", 2048, 2048, static_causal=False) == "xla"
    assert set(IMPLEMENTATIONS) == {"auto", "explicit", "xla", "cudnn", "splash", "blockwise"}


def test_auto_runs_on_cpu_and_matches_explicit():
    t, s, kw = CASES["causal_left_padded"]()
    q, k, v = qkv(t, s)
    assert_close(run("auto", q, k, v, **kw)[0], run("explicit", q, k, v, **kw)[0])


def test_blockwise_bfloat16_close_to_explicit():
    t, s, kw = CASES["causal_segments"]()
    q, k, v = qkv(t, s, dtype=jnp.bfloat16)
    out, _ = run("blockwise", q, k, v, **kw)
    ref, _ = run("explicit", q, k, v, **kw)
    assert out.dtype == jnp.bfloat16
    assert_close(out.astype(jnp.float32), ref.astype(jnp.float32), tol=2e-2)


@pytest.mark.slow  # a benchmark script in a subprocess
def test_bench_quick_runs():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, str(ROOT / "tools/bench/attention.py"), "--quick"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "blockwise" in res.stdout and "fwd+bwd" in res.stdout
