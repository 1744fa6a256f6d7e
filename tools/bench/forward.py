"""Prefill throughput: mmjax vs transformers on the same random model and inputs (BENCH.md).

    python tools/bench/forward.py [--reps 5] [--batch 4] [--image 448] [--text 128]

Both run on this machine in this process, after a warm-up (mmjax's compile time is
reported apart). Prints median tokens/s of each and the ratio mmjax / transformers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np


def build(path: str, cfg, seed: int = 0):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    hf_cfg = Qwen2_5_VLConfig(**cfg.to_hf_dict())
    model = Qwen2_5_VLForConditionalGeneration(hf_cfg).eval()
    model.save_pretrained(path)
    return model


def inputs(cfg, batch: int, image_px: int, n_text: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    side = image_px // cfg.vision.patch_size
    grid = np.array([[1, side, side]] * batch)
    n_img = side * side // cfg.vision.spatial_merge_size ** 2
    row = ([cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id]
           + list(rng.integers(0, cfg.text.vocab_size - 16, n_text)))
    ids = np.array([row] * batch, np.int64)
    pixels = rng.standard_normal((batch * side * side, cfg.vision.patch_dim)).astype(np.float32)
    return ids, np.ones_like(ids), pixels, grid


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image", type=int, default=448, help="square image side in pixels")
    ap.add_argument("--text", type=int, default=128, help="text tokens per sample")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)

    import jax
    import torch
    from mmjax.models import qwen2_5_vl
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = qwen2_5_vl.preset(args.preset)
    ids, mask, pixels, grid = inputs(cfg, args.batch, args.image, args.text)
    tokens = ids.size
    with tempfile.TemporaryDirectory() as d:
        ref = build(d, cfg)
        ours = qwen2_5_vl.load_hf(d, progress=False)
    tt = torch.from_numpy((ids == cfg.image_token_id).astype(np.int64))
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    t_px, t_grid = torch.from_numpy(pixels), torch.from_numpy(grid)

    def run_hf():
        with torch.no_grad():
            return ref(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_px, image_grid_thw=t_grid,
                       mm_token_type_ids=tt).logits

    def run_mmjax():
        return ours.logits(ids, mask, pixels, grid)

    t0 = time.perf_counter()
    ours_logits = run_mmjax()
    compile_s = time.perf_counter() - t0
    ref_logits = run_hf().float().numpy()
    err = float(np.abs(ours_logits - ref_logits).max())
    hf_times = timed(run_hf, args.reps)
    mm_times = timed(run_mmjax, args.reps)
    hf_tps = tokens / statistics.median(hf_times)
    mm_tps = tokens / statistics.median(mm_times)
    print(f"prefill {args.preset}: batch {args.batch} x {ids.shape[1]} tokens "
          f"({args.image}px image + {args.text} text), reps {args.reps}, devices {jax.devices()}")
    print(f"  transformers (sdpa, torch {torch.__version__}, {torch.get_num_threads()} threads): "
          f"{hf_tps:,.0f} tokens/s (median {statistics.median(hf_times) * 1e3:.0f} ms)")
    print(f"  mmjax (jit, first call incl. compile {compile_s:.1f} s): {mm_tps:,.0f} tokens/s "
          f"(median {statistics.median(mm_times) * 1e3:.0f} ms)")
    print(f"  ratio mmjax / transformers: {mm_tps / hf_tps:.2f}x   max |logit diff| {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
