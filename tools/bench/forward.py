"""Prefill throughput: mmjax vs transformers on the same random model and inputs (BENCH.md).

    python tools/bench/forward.py [--reps 5] [--batch 4] [--image 448] [--text 128] [--attention auto]
    python tools/bench/forward.py --quick      # tiny model, tiny shapes, 1 rep: a smoke test

The BENCH.md `bench` model (random, built by transformers, loaded into mmjax with `load_hf`),
batch 4, each row one 448x448 image (256 merged tokens) and 128 text tokens; one full
forward to float32 logits on each side (transformers: sdpa, torch.no_grad). Both run in this
process after a warm-up (mmjax's compile time is reported apart), alternating round by round;
prints median tokens/s of each and the ratio mmjax / transformers. --attention picks mmjax's
attention implementation (mmjax.models.attention.IMPLEMENTATIONS), e.g. to compare blockwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None) -> int:
    from mmjax.models.attention import IMPLEMENTATIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, default=448, help="square image side in pixels")
    ap.add_argument("--text", type=int, default=128, help="text tokens per sample")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attention", default="auto", choices=IMPLEMENTATIONS, help="mmjax's attention")
    ap.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, 1 rep: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.batch, args.image, args.text, args.reps = "tiny", 2, 56, 8, 1

    import jax
    import torch
    from mmjax.models import qwen2_5_vl
    cfg = qwen2_5_vl.preset(args.preset)
    ids, mask, pixels, grid = common.prompt_inputs(cfg, args.batch, args.image, args.text)
    tokens = ids.size
    ref, ours = common.build_pair(cfg, attention=args.attention)
    t_in = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "pixel_values": torch.from_numpy(pixels), "image_grid_thw": torch.from_numpy(grid),
            "mm_token_type_ids": torch.from_numpy((ids == cfg.image_token_id).astype(np.int64))}

    def run_hf():
        with torch.no_grad():
            return ref(**t_in).logits

    def run_mmjax():  # `logits` prepares the batch on the host too, as a user's call does
        return ours.logits(ids, mask, pixels, grid)

    start = time.perf_counter()
    ours_logits = run_mmjax()
    compile_s = time.perf_counter() - start
    err = float(np.abs(ours_logits - run_hf().float().numpy()).max())
    times = {"transformers": [], "mmjax": []}
    for _ in range(args.reps):  # interleaved: load drift on a shared machine hits both alike
        times["transformers"] += common.timed(run_hf, 1)
        times["mmjax"] += common.timed(run_mmjax, 1)
    hf_s, mm_s = common.median(times["transformers"]), common.median(times["mmjax"])
    print(f"prefill {args.preset}: batch {args.batch} x {ids.shape[1]} tokens "
          f"({args.image}px image + {args.text} text), reps {args.reps}, devices {jax.devices()}")
    print(f"  transformers (sdpa, torch {torch.__version__}, {torch.get_num_threads()} threads): "
          f"{tokens / hf_s:,.0f} tokens/s (median {hf_s * 1e3:.0f} ms)")
    print(f"  mmjax (jit, attention {args.attention}, first call incl. compile {compile_s:.1f} s): "
          f"{tokens / mm_s:,.0f} tokens/s (median {mm_s * 1e3:.0f} ms)")
    print(f"  ratio mmjax / transformers: {hf_s / mm_s:.2f}x (target >= 1.2x)   max |logit diff| {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
