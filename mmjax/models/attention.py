"""Scaled dot-product attention with grouped KV heads, behind one implementation knob.

`attention` is the entry point: the mask is described (key validity, causal slots, segment
ids), never passed as a [T, S] array, so implementations that do not hold a [T, S] score
array (blockwise, cuDNN, splash) never see one either. Implementations:

- explicit: einsum + float32 softmax over a [T, S] score array; the only one that can
  also return per-key-group attention masses (CMAB capture, SPEC.md 2.2).
- xla: jax.nn.dot_product_attention(implementation="xla") with a boolean mask.
- cudnn: the same call with implementation="cudnn" (GPU, bf16/fp16).
- splash: Pallas TPU splash attention (S == T, no cache offset); interpret mode off TPU.
- blockwise: pure-JAX online-softmax attention over key tiles with a recomputing custom
  VJP (mmjax/models/attention_blockwise.py), for long prefill / training on CPU.
- auto: picked per backend and shape by `choose_implementation`.

The capture is what CMAB needs: for every query row, the attention mass that falls on
each group of keys (image tokens, text tokens, ...). It is reduced inside the explicit
path from the probabilities XLA already holds, so callers get a [batch, queries, heads,
groups] array and never a [queries, keys] map.

A query row with no key it may attend gets an output of 0 (and masses of 0) in every
implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp

from mmjax.models.attention_blockwise import ANY_SEGMENT, allowed_mask, blockwise_attention
from mmjax.models.attention_prefix import prefix_attention
from mmjax.models.attention_splash import splash_attention, splash_block

IMPLEMENTATIONS = ("auto", "explicit", "xla", "cudnn", "splash", "blockwise")

# CPU: blockwise from this many keys and queries on. Measured with tools/bench/attention.py
# (B=4, H=8, Hkv=2, D=64, fp32, 2 shared cores): blockwise's forward is 2-2.5x faster
# than explicit's from T=S=256 on and 2-5x for T=64..256 chunks over S=4096 keys, but
# its recomputing backward only breaks even at T=S=512 (causal 0.5x, full 1.0x of
# explicit's time; at 256 full attention it is 1.8x slower). Below that, and for short
# chunks over a cache, explicit's [T, S] scores are small.
CPU_BLOCKWISE_MIN_KEYS = 512
CPU_BLOCKWISE_MIN_QUERIES = 64


def _explicit(q, k, v, mask, key_groups=None):
    """q [B, T, H, D] over heads-major k, v [B, Hkv, S, D] (the KV cache layout, so a decode
    step reads the cache as it lies); mask bool [B, T, S] or [B, 1, S]; key_groups optional
    float [B, S, G]. Returns (out [B, T, H, D], masses [B, T, H, G] or None). Scores are
    normalised in float32, as transformers' eager attention does."""
    b, t, h, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    g = h // hkv
    # Heads-major operands make both products plain batched matmuls (batch = B x Hkv,
    # rows = G x T), which XLA:CPU runs markedly faster than the 5-D contraction.
    qh = q.reshape(b, t, hkv, g, d).transpose(0, 2, 3, 1, 4).reshape(b, hkv, g * t, d)
    kh, vh = k, v
    scores = jnp.einsum("bkmd,bksd->bkms", qh, kh) * jnp.asarray(d ** -0.5, q.dtype)
    scores = scores.reshape(b, hkv, g, t, s).astype(jnp.float32)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    masses = None
    if key_groups is not None:
        masses = jnp.einsum("bkgts,bsn->btkgn", probs, key_groups.astype(jnp.float32))
        masses = masses.reshape(b, t, h, key_groups.shape[-1])
    out = jnp.einsum("bkms,bksd->bkmd", probs.astype(v.dtype).reshape(b, hkv, g * t, s), vh)
    out = out.reshape(b, hkv, g, t, d).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, h, d), masses


def _gpu_head_dim_max() -> int:
    # cuDNN flash attention takes head_dim <= 256 from Hopper (sm_90) on, <= 128 before.
    try:
        cc = jax.devices("gpu")[0].compute_capability
        return 256 if tuple(int(x) for x in str(cc).split(".")) >= (9, 0) else 128
    except Exception:  # no GPU or no compute capability reported: be conservative
        return 128


def _cudnn_unsupported(dtype, head_dim: int, t: int, s: int) -> str | None:
    """Why cuDNN flash attention cannot take this call, or None if it can."""
    if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"it needs bfloat16 or float16 inputs, got {jnp.dtype(dtype).name}"
    h_max = _gpu_head_dim_max()
    if head_dim % 8 or head_dim > h_max:
        return f"it needs head_dim a multiple of 8 and <= {h_max}, got {head_dim}"
    if t % 2 or s % 2:
        # The mask reaches cuDNN as a bias, and its backward with a bias needs even lengths.
        return f"with a mask it needs even sequence lengths, got T={t}, S={s}"
    return None


def choose_implementation(*, backend: str, t: int, s: int, head_dim: int, dtype,
                          static_causal: bool, key_groups: bool) -> str:
    """What implementation="auto" runs for this call.

    backend: jax.default_backend() ("cpu", "gpu", "tpu"); t / s: query / key lengths;
    static_causal: the queries sit at slots 0..T-1 over keys 0..S-1 (q_slots not given),
    which splash needs; key_groups: mass capture requested (explicit only).
    """
    if key_groups or t == 1:  # capture, or a decode step: one row of scores is cheap
        return "explicit"
    if backend == "gpu":
        return "cudnn" if _cudnn_unsupported(dtype, head_dim, t, s) is None else "xla"
    if backend == "tpu":
        return "splash" if static_causal and splash_block(t, s) is not None else "xla"
    if s >= CPU_BLOCKWISE_MIN_KEYS and t >= CPU_BLOCKWISE_MIN_QUERIES:
        return "blockwise"
    return "explicit"


# ---- planning for another platform (mmjax.jobs.plan) --------------------------------------------

# The platform `auto` chooses for while a plan compiles (None: the default backend's own), and
# the kernels replaced by a stand-in because they cannot compile on the planning host.
_target: list[str] = []
stand_ins: set[tuple[str, str]] = set()
_NEEDS = {"cudnn": "gpu", "splash": "tpu"}


@contextlib.contextmanager
def planning_target(platform: str) -> Iterator[None]:
    """Trace attention as it would run on `platform` ("cpu", "gpu", "tpu").

    `auto` chooses what it would choose there. A kernel the planning host cannot compile
    (cuDNN off a GPU, splash off a TPU) becomes `blockwise`, which keeps O(T) memory as those
    flash kernels do (never a [T, S] score array, in the forward or the backward pass); each
    replacement is recorded in `stand_ins` as (kernel, "blockwise"). The replacement's FLOPs
    and temporaries are a stand-in's, not the kernel's: mmjax.jobs.plan says so in its report.
    """
    _target.append(platform)
    try:
        yield
    finally:
        _target.pop()


def _backend() -> str:
    return _target[-1] if _target else jax.default_backend()


def _runnable(implementation: str) -> str:
    """`implementation`, or its stand-in while planning on a host that cannot compile it."""
    if _target and _NEEDS.get(implementation, jax.default_backend()) != jax.default_backend():
        stand_ins.add((implementation, "blockwise"))
        return "blockwise"
    return implementation


def _per_device_rows(kernel, *arrays):
    """kernel(*arrays) on each device's rows (`jax.shard_map` over the batch mesh axes) inside
    `mmjax.sharding.activation_rules`. GSPMD cannot partition blockwise's loops or a Pallas
    call: left to it, every device would attend every row of the batch (measured by mmjax.jobs.plan:
    the 7B update's temporaries 8x their sharded size on fsdp=8). Outside a mesh, or when the
    rows do not split evenly, the kernel runs as it is."""
    from mmjax.sharding import batch_axes_in_context
    axes = batch_axes_in_context()
    shards = 1
    for a in axes:
        shards *= jax.sharding.get_abstract_mesh().shape[a]
    if shards == 1 or arrays[0].shape[0] % shards:
        return kernel(*arrays)
    present = [i for i, a in enumerate(arrays) if a is not None]

    def local(*given):
        full = list(arrays)
        for i, a in zip(present, given):
            full[i] = a
        return kernel(*full)

    rows = jax.sharding.PartitionSpec(axes)
    return jax.shard_map(local, in_specs=tuple(rows for _ in present), out_specs=rows,
                         check_vma=False)(*(arrays[i] for i in present))


def _check(cond: bool, msg: str):
    if not cond:
        raise ValueError(f"attention: {msg}")


def _normalise(q, k, v, key_valid, q_slots, causal, q_segments, kv_segments, key_groups):
    """Validate shapes; returns (k, v, key_valid, q_slots [B, T] int32, q_seg, kv_seg)."""
    _check(q.ndim == 4, f"q must be [B, T, H, D], got shape {tuple(q.shape)}")
    b, t, h, d = q.shape
    _check(k.ndim == 4 and k.shape[0] == b and k.shape[3] == d,
           f"k must be heads-major [B={b}, Hkv, S, D={d}], got shape {tuple(k.shape)}")
    _check(v.shape == k.shape, f"v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    hkv, s = k.shape[1], k.shape[2]
    _check(h % hkv == 0, f"query heads {h} must be a multiple of key/value heads {hkv}")
    _check(key_valid is not None and tuple(key_valid.shape) == (b, s),
           f"key_valid must be bool [B={b}, S={s}], got "
           f"{None if key_valid is None else tuple(key_valid.shape)}")
    key_valid = key_valid.astype(bool)
    if q_slots is None:
        _check(not causal or s == t, f"causal attention with S={s} keys != T={t} queries "
               "needs q_slots (the cache slot of each query)")
        q_slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    else:
        q_slots = jnp.asarray(q_slots)
        _check(q_slots.shape in ((t,), (b, t)),
               f"q_slots must be int [T={t}] or [B={b}, T={t}], got {tuple(q_slots.shape)}")
        q_slots = jnp.broadcast_to(q_slots.astype(jnp.int32), (b, t))
    _check((q_segments is None) == (kv_segments is None),
           "q_segments and kv_segments must be given together")
    if q_segments is not None:
        _check(tuple(q_segments.shape) == (b, t),
               f"q_segments must be int [B={b}, T={t}], got {tuple(q_segments.shape)}")
        _check(tuple(kv_segments.shape) == (b, s),
               f"kv_segments must be int [B={b}, S={s}], got {tuple(kv_segments.shape)}")
        q_segments, kv_segments = q_segments.astype(jnp.int32), kv_segments.astype(jnp.int32)
    if key_groups is not None:
        _check(key_groups.ndim == 3 and tuple(key_groups.shape[:2]) == (b, s),
               f"key_groups must be float [B={b}, S={s}, G], got {tuple(key_groups.shape)}")
    # Every implementation takes one dtype; the KV cache may be stored in another.
    return k.astype(q.dtype), v.astype(q.dtype), key_valid, q_slots, q_segments, kv_segments


def _zero_keyless_rows(out, masses, row_any):
    """Rows with no allowed key -> 0 (implementations disagree on them otherwise)."""
    out = jnp.where(row_any[:, :, None, None], out, jnp.zeros((), out.dtype))
    if masses is not None:
        masses = jnp.where(row_any[:, :, None, None], masses, 0.0)
    return out, masses


def _jax_nn(q, k, v, mask, implementation: str, is_causal: bool):
    # jax.nn wants BTNH keys; GQA is native. The boolean mask goes in as `mask` ([B, 1, T,
    # S], broadcast over heads); cuDNN turns it into an additive bias. Its
    # query_seq_lengths / key_value_seq_lengths would only say "the first n are valid",
    # which cannot express left padding, so they are not used.
    return jax.nn.dot_product_attention(
        q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask=mask[:, None],
        is_causal=is_causal, implementation=implementation)


def _with_prefix(q, k, v, key_valid, prefix, *, causal, q_slots, q_segments, key_groups, implementation):
    """`attention` with a shared prefix: prefix_attention where the explicit path would run,
    else the prefix repeated for every row of its group and joined to the own keys."""
    pk, pv, p_valid = prefix
    n, t = q.shape[:2]
    _check(causal and key_groups is None, "a prefix needs causal=True, and no key_groups")
    _check(q_segments is None or (tuple(q_segments.shape) == (n, t) and k.shape[2] == t),
           f"prefix with segments: q_segments must be [{n}, {t}] over the rows' own {t} keys (packed rows)")
    _check(pk.ndim == 4 and pv.shape == pk.shape and pk.shape[0] > 0 and n % pk.shape[0] == 0,
           f"prefix k / v must be [P, Hkv, Sp, D] with P dividing the {n} query rows, got "
           f"{tuple(pk.shape)} / {tuple(pv.shape)}")
    _check(tuple(p_valid.shape) == pk.shape[:1] + pk.shape[2:3],
           f"prefix key_valid must be bool [{pk.shape[0]}, {pk.shape[2]}], got {tuple(p_valid.shape)}")
    k, v, key_valid, q_slots, *_ = _normalise(q, k, v, key_valid, q_slots, True, None, None, None)
    g, sp = n // pk.shape[0], pk.shape[2]
    if implementation == "auto":
        implementation = choose_implementation(
            backend=_backend(), t=t, s=sp + k.shape[2], head_dim=q.shape[3], dtype=q.dtype,
            static_causal=False, key_groups=False)
    implementation = _runnable(implementation)
    if implementation == "explicit":
        out, row_any = prefix_attention(q, k, v, key_valid, pk.astype(q.dtype), pv.astype(q.dtype),
                                        p_valid.astype(bool), q_slots, segments=q_segments)
        return _zero_keyless_rows(out, None, row_any)

    def join(shared, own, axis):  # the prefix repeated for each row of its group, then the own keys
        return jnp.concatenate([jnp.repeat(shared.astype(own.dtype), g, axis=0), own], axis=axis)
    kv_segments = None
    if q_segments is not None:  # packed rows: every segment of a row sees its prompt
        kv_segments = join(jnp.full((pk.shape[0], sp), ANY_SEGMENT, jnp.int32), q_segments.astype(jnp.int32), 1)
    return attention(q, join(pk, k, 2), join(pv, v, 2), key_valid=join(p_valid, key_valid, 1),
                     q_slots=sp + q_slots, causal=True, q_segments=q_segments, kv_segments=kv_segments,
                     implementation=implementation)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, key_valid: jax.Array,
              q_slots: jax.Array | None = None, causal: bool = False,
              q_segments: jax.Array | None = None, kv_segments: jax.Array | None = None,
              key_groups: jax.Array | None = None, prefix: tuple | None = None, implementation: str = "auto"):
    """Attention of q [B, T, H, D] over heads-major k, v [B, Hkv, S, D] (the KV cache layout).

    Query t may attend key s when key_valid[b, s], and, if causal, s <= q_slots[b, t]
    (q_slots int [T] or [B, T]; default arange(T), which needs S == T), and, if segments
    are given, q_segments[b, t] == kv_segments[b, s] or kv_segments[b, s] == ANY_SEGMENT (a key
    every segment sees: a prompt joined to the completions packed after it; not splash).
    key_groups: optional float [B, S, G]; then also the attention mass of each query on
    each key group, [B, T, H, G] (explicit implementation only).
    prefix: optional (k, v, key_valid) of keys before these, [P, Hkv, Sp, D] and [P, Sp],
    shared by groups of B / P consecutive rows (a prompt's KV cache under its G
    completions), all in the past of every query; then causal=True, and q_slots index
    the own keys k, v (the completions' own cache).
    implementation: one of IMPLEMENTATIONS.
    Returns (out [B, T, H, D] in q.dtype, masses or None). Scores are normalised in
    float32. Rows with no allowed key give 0.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention: unknown implementation {implementation!r}; "
                         f"expected one of {', '.join(IMPLEMENTATIONS)}")
    if prefix is not None:
        return _with_prefix(q, k, v, key_valid, prefix, causal=causal, q_slots=q_slots, q_segments=q_segments,
                            key_groups=key_groups, implementation=implementation)
    static_causal = q_slots is None
    k, v, key_valid, q_slots, q_seg, kv_seg = _normalise(
        q, k, v, key_valid, q_slots, causal, q_segments, kv_segments, key_groups)
    b, t, h, d = q.shape
    s = k.shape[2]
    if implementation == "auto":
        implementation = choose_implementation(
            backend=_backend(), t=t, s=s, head_dim=d, dtype=q.dtype,
            static_causal=static_causal, key_groups=key_groups is not None)
    elif key_groups is not None and implementation != "explicit":
        raise ValueError(f"attention: key_groups (attention-mass capture) needs "
                         f"implementation='explicit' (or 'auto'), got {implementation!r}")
    implementation = _runnable(implementation)

    if implementation == "blockwise":
        out = _per_device_rows(lambda *a: blockwise_attention(*a, causal=causal), q, k, v, key_valid, q_slots,
                               q_seg, kv_seg)
        return out, None  # keyless rows are 0 already

    dense = lambda: allowed_mask(key_valid, jnp.arange(s), q_slots, q_seg, kv_seg, causal)
    if implementation == "explicit":
        mask = dense()
        out, masses = _explicit(q, k, v, mask, key_groups)
        return _zero_keyless_rows(out, masses, mask.any(-1))
    if implementation == "xla":
        mask = dense()
        return _zero_keyless_rows(_jax_nn(q, k, v, mask, "xla", False), None, mask.any(-1))
    if implementation == "cudnn":
        backend = jax.default_backend()
        if backend != "gpu":
            raise ValueError(f"attention: implementation='cudnn' needs a CUDA GPU, but the "
                             f"default JAX backend is {backend!r}")
        why = _cudnn_unsupported(q.dtype, d, t, s)
        if why is not None:
            raise ValueError(f"attention: implementation='cudnn' cannot run q {tuple(q.shape)}: {why}")
        mask = dense()
        # With queries at 0..T-1 over keys 0..T-1 the causal flag lets cuDNN skip the
        # upper triangle; the mask still carries padding and segments.
        out = _jax_nn(q, k, v, mask, "cudnn", causal and static_causal)
        return _zero_keyless_rows(out, None, mask.any(-1))
    # splash
    if causal and not static_causal:
        raise ValueError("attention: implementation='splash' has a static causal mask "
                         "(queries at slots 0..T-1); call it with q_slots=None")
    out = _per_device_rows(lambda *a: splash_attention(*a, causal=causal), q, k, v, key_valid, q_seg, kv_seg)
    # The [B, T] reduction fuses with the mask's construction: no [T, S] array is stored.
    return _zero_keyless_rows(out, None, dense().any(-1))
