"""Attention implementations on this machine: explicit vs blockwise vs xla (mmjax.models.attention).

    python tools/bench/attention.py [--lengths 1024 2048] [--batch 4] [--reps 5] [--quick]

Causal prefill (--full: non-causal), fp32, B x T=S x H=8 x Hkv=2 x D=64 by default; times the forward and
forward+backward (grad of a sum w.r.t. q, k, v) of each implementation after a warm-up
compile, and prints the median seconds and the ratio to explicit. --quick runs a tiny
shape once (a smoke test of this script, not a measurement).

The CPU threshold of implementation="auto" (CPU_BLOCKWISE_MIN_KEYS in
mmjax/models/attention.py) comes from this script's --lengths 256 512 1024 2048 run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def make_fns(impl: str, causal: bool = True):
    import jax
    from mmjax.models.attention import attention

    def fwd(q, k, v, key_valid):
        return attention(q, k, v, key_valid=key_valid, causal=causal, implementation=impl)[0]

    def loss(q, k, v, key_valid):
        return fwd(q, k, v, key_valid).astype("float32").sum()

    grad = jax.grad(loss, argnums=(0, 1, 2))
    return jax.jit(fwd), jax.jit(grad)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--impls", nargs="+", default=["explicit", "blockwise", "xla"])
    ap.add_argument("--full", action="store_true", help="non-causal (vision-tower style) attention")
    ap.add_argument("--quick", action="store_true", help="tiny shape, one rep: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.lengths, args.batch, args.reps = [64], 1, 1

    import jax
    import jax.numpy as jnp
    import numpy as np

    print(f"backend={jax.default_backend()} devices={len(jax.devices())} B={args.batch} "
          f"H={args.heads} Hkv={args.kv_heads} D={args.head_dim} fp32 "
          f"{'full' if args.full else 'causal'} reps={args.reps}")
    rng = np.random.default_rng(0)
    for n in args.lengths:
        q = jnp.asarray(rng.standard_normal((args.batch, n, args.heads, args.head_dim)), jnp.float32)
        k, v = (jnp.asarray(rng.standard_normal((args.batch, args.kv_heads, n, args.head_dim)),
                            jnp.float32) for _ in range(2))
        key_valid = jnp.ones((args.batch, n), bool)
        medians = {}
        for impl in args.impls:
            fwd, grad = make_fns(impl, causal=not args.full)
            for name, fn in (("fwd", fwd), ("fwd+bwd", grad)):
                jax.block_until_ready(fn(q, k, v, key_valid))  # compile + warm-up
                ts = timed(lambda: jax.block_until_ready(fn(q, k, v, key_valid)), args.reps)
                medians[impl, name] = statistics.median(ts)
        for name in ("fwd", "fwd+bwd"):
            base = medians["explicit", name] if "explicit" in args.impls else None
            cells = []
            for impl in args.impls:
                m = medians[impl, name]
                ratio = f" ({m / base:.2f}x)" if base else ""
                cells.append(f"{impl} {m * 1e3:8.1f} ms{ratio}")
            print(f"T=S={n:5d} {name:8s} " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
