"""Generation: mmjax's sampler vs transformers' `generate`, same model, same inputs, per batch size.

  python tools/bench/generate.py [--batch 8 64] [--new-tokens 64] [--repeats 5] [--large-repeats 2]
  python tools/bench/generate.py --quick      # tiny model, batches 2 and 4, 4 new tokens: a smoke test

The BENCH.md `bench` model (random, built by transformers, loaded into mmjax with `load_hf`);
each prompt one 448x448 photo (256 merged image tokens) and 32 text tokens, greedy, fixed
length (no stop token). For every batch size:
  * whole generate (prefill included): the median wall time of generate(new_tokens) and the
    ratio transformers / mmjax (BENCH.md: >= 1.5x at batch 8; batch 64 is the RL scale);
  * at batches up to --split-max-batch (8) also the decode rate, batch x (new_tokens - 1) / (time(generate
    new_tokens) - time(generate 1)), which excludes the prefill (>= 2x at batch 8). Larger
    batches skip it to keep the run short, and take --large-repeats repeats.
The greedy tokens of both must agree (printed). Compilation (mmjax) and the first call
(both) are warm-ups, reported apart; calls alternate round by round; timings are medians.

How close each side's prefill is to this machine's ceiling: the model FLOPs of the prefill
(2 x params x tokens over the real prompt tokens, image patches and merged tokens, plus one
head row per prompt: `common.forward_flops`; attention and padding not counted) over the
median rate of a jax fp32 GEMM timed between the calls, against each side's generate(1)
time. A side at 100% would be at the GEMM rate on the model's own matmuls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from mmjax.models.qwen2_5_vl import load_hf  # noqa: E402
from mmjax.models.qwen2_5_vl.presets import PRESETS  # noqa: E402
from mmjax.processing.image import preprocess_images  # noqa: E402

# The bench preset's special tokens (cmab.py reads these too).
BENCH = PRESETS["bench"]
EOS, PAD = BENCH.text.eos_token_id, BENCH.text.pad_token_id
VSTART, VEND, IMAGE, VIDEO = (BENCH.vision_start_token_id, BENCH.vision_end_token_id, BENCH.image_token_id,
                              BENCH.video_token_id)
# Text tokens are drawn from [0, BOS): the ids below every special one (the preset has no BOS token;
# the name is kept for cmab.py).
BOS = common.text_id_limit(BENCH)
IMAGE_SIDE = 448


def build_bench_model(out_dir: str, seed: int = 0, attn: str = "sdpa", cfg=BENCH):
    """A random transformers model of `cfg` (the bench preset), saved to out_dir (float32, eval)."""
    return common.build_hf(cfg, out_dir, seed, attn)


def photos(n: int, side: int = IMAGE_SIDE) -> list[np.ndarray]:
    import skimage.data
    from PIL import Image
    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    return [np.asarray(Image.fromarray(sources[i % len(sources)]).resize((side, side))) for i in range(n)]


def prompts(batch: int, text_tokens: int, seed: int = 0, cfg=BENCH, image_side: int = IMAGE_SIDE):
    """`batch` prompts: text, <vision_start> image placeholders <vision_end>, text (no padding)."""
    px = preprocess_images(photos(batch, image_side))
    grid = px["image_grid_thw"]
    n_image = int(np.prod(grid[0])) // cfg.vision.spatial_merge_size ** 2
    rng = np.random.default_rng(seed)
    limit, half = common.text_id_limit(cfg), text_tokens // 2
    rows = [np.concatenate([rng.integers(0, limit, half), [cfg.vision_start_token_id],
                            np.full(n_image, cfg.image_token_id), [cfg.vision_end_token_id],
                            rng.integers(0, limit, text_tokens - half)]) for _ in range(batch)]
    ids = np.stack(rows).astype(np.int64)
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), pixel_values=px["pixel_values"],
                image_grid_thw=grid)


def hf_generate(model, batch, new_tokens: int, cfg=BENCH, **kw):
    import torch
    t = lambda x: torch.from_numpy(np.asarray(x))
    with torch.no_grad():
        return model.generate(input_ids=t(batch["input_ids"]), attention_mask=t(batch["attention_mask"]),
                              pixel_values=t(batch["pixel_values"]), image_grid_thw=t(batch["image_grid_thw"]),
                              mm_token_type_ids=t((batch["input_ids"] == cfg.image_token_id).astype(np.int64)),
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=cfg.text.eos_token_id, pad_token_id=cfg.text.pad_token_id, **kw)


def timed(calls: dict, repeats: int, warm: tuple = ()) -> tuple[dict, dict]:
    """First-call seconds (for calls not in `warm`, which ran already) and the median of
    `repeats` further calls, for each named call.

    The calls are interleaved round by round, so load drift on a shared machine hits all alike.
    """
    first, times = {}, {name: [] for name in calls}
    for name, fn in calls.items():
        if name not in warm:
            first[name] = common.timed(fn, 1)[0]
    for _ in range(repeats):
        for name, fn in calls.items():
            times[name] += common.timed(fn, 1)
    return first, {name: statistics.median(t) for name, t in times.items()}


def prefill_model_flops(model, cfg, batch) -> float:
    groups = common.param_groups(model.params, cfg)
    patches = int(np.prod(batch["image_grid_thw"], axis=1).sum())
    b, t = batch["input_ids"].shape
    return common.forward_flops(groups, text_tokens=b * t, head_tokens=b, patches=patches,
                                merged=patches // cfg.vision.spatial_merge_size ** 2)


def bench_batch(hf_model, model, cfg, b: int, args) -> dict:
    """Whole-generate (and, for small batches, decode-only) figures of both at batch b."""
    n = args.new_tokens
    batch = prompts(b, args.text_tokens, cfg=cfg, image_side=args.image)
    runs = {
        "transformers": lambda k: hf_generate(hf_model, batch, k, cfg=cfg),
        "mmjax": lambda k: model.generate(**batch, max_new_tokens=k, eos_token_ids=[]),
    }
    # Same tokens first: greedy outputs of both must agree, or the comparison is void. These
    # calls are the warm-ups of generate(n) (mmjax compiles encode, prefill and decode here).
    start = time.perf_counter()
    ref = hf_generate(hf_model, batch, n, cfg=cfg)[:, batch["input_ids"].shape[1]:].numpy()
    hf_first = time.perf_counter() - start
    start = time.perf_counter()
    ours = model.generate(**batch, max_new_tokens=n, eos_token_ids=[]).tokens
    mm_first = time.perf_counter() - start
    agree = float((ref == ours).mean())
    split = b <= args.split_max_batch
    prefill_flops = prefill_model_flops(model, cfg, batch)
    repeats = args.repeats if split else args.large_repeats
    lengths = (n, 1) if split else (n,)
    calls = {(name, k): (lambda run=run, k=k: run(k)) for name, run in runs.items() for k in lengths}
    gemm_probe, rates = common.gemm_probe(args.gemm_n), []
    calls["gemm"] = lambda: rates.extend(gemm_probe() for _ in range(3))
    first, med = timed(calls, repeats, warm=(("transformers", n), ("mmjax", n), "gemm"))
    first.update({("transformers", n): hf_first, ("mmjax", n): mm_first})
    gemm = common.median(rates)
    results = {}
    for name in runs:
        r = dict(generate_s=med[name, n], new_tokens_per_s=b * n / med[name, n],
                 first_call_s=first[name, n])  # mmjax's includes compiling
        if split:
            decode = max(med[name, n] - med[name, 1], 1e-9)
            r.update(prefill_plus_1_s=med[name, 1], decode_tokens_per_s=b * (n - 1) / decode,
                     decode_ms_per_step=1e3 * decode / max(n - 1, 1),
                     prefill_of_gemm_rate=prefill_flops / gemm / med[name, 1])
        results[name] = r
    out = dict(batch=b, new_tokens=n, prompt_tokens=int(batch["input_ids"].shape[1]), repeats=repeats,
               gemm_flops=gemm, gemm_rates=rates, prefill_model_flops=prefill_flops,
               token_agreement=agree, results=results,
               whole_generate_ratio=results["transformers"]["generate_s"] / results["mmjax"]["generate_s"])
    if split:
        out["decode_ratio"] = (results["mmjax"]["decode_tokens_per_s"]
                               / results["transformers"]["decode_tokens_per_s"])
    return out


def report(row: dict) -> str:
    mm, hf = row["results"]["mmjax"], row["results"]["transformers"]
    line = (f"batch {row['batch']:3d}: whole generate ({row['new_tokens']} new tokens, prefill included) mmjax "
            f"{mm['generate_s']:.2f} s vs transformers {hf['generate_s']:.2f} s -> ratio "
            f"{row['whole_generate_ratio']:.2f}x" + (" (target >= 1.5x)" if row["batch"] == 8 else ""))
    if "decode_ratio" in row:
        line += (f"; decode mmjax {mm['decode_tokens_per_s']:.1f} tok/s ({mm['decode_ms_per_step']:.1f} ms/step) "
                 f"vs {hf['decode_tokens_per_s']:.1f} tok/s -> ratio {row['decode_ratio']:.2f}x"
                 + (" (target >= 2x)" if row["batch"] == 8 else ""))
        line += (f"; prefill + 1 token mmjax {mm['prefill_plus_1_s']:.2f} s vs {hf['prefill_plus_1_s']:.2f} s, "
                 f"{row['prefill_model_flops'] / 1e9:.0f} GFLOP of model FLOPs at the GEMM rate "
                 f"{row['gemm_flops'] / 1e9:.0f} GFLOP/s: mmjax {mm['prefill_of_gemm_rate']:.0%}, "
                 f"transformers {hf['prefill_of_gemm_rate']:.0%} of it")
    return line + f"; greedy token agreement {row['token_agreement']:.3f}"


def main(argv=None) -> int:
    from mmjax.models.attention import IMPLEMENTATIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--text-tokens", type=int, default=32)
    ap.add_argument("--image", type=int, default=IMAGE_SIDE, help="square image side in pixels")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--split-max-batch", type=int, default=8,
                    help="measure the decode-only rate (extra generate(1) calls) at batches up to this")
    ap.add_argument("--large-repeats", type=int, default=2, help="repeats at batches above --split-max-batch")
    ap.add_argument("--attention", default="auto", choices=IMPLEMENTATIONS, help="mmjax's attention")
    ap.add_argument("--gemm-n", type=int, default=2048, help="side of the GEMM whose rate is the ceiling")
    ap.add_argument("--quick", action="store_true",
                    help="tiny model, batches 2 (with the decode split) and 4 (without), 4 new tokens, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.image, args.new_tokens, args.text_tokens = "tiny", 56, 4, 8
        args.batch, args.repeats, args.large_repeats, args.split_max_batch = [2, 4], 1, 1, 2
        args.gemm_n = 256

    import torch
    cfg = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        hf_model = build_bench_model(tmp, cfg=cfg)
        model = load_hf(tmp, progress=False, attention=args.attention)
    rows = []
    for b in args.batch:
        rows.append(bench_batch(hf_model, model, cfg, b, args))
        print(json.dumps(dict(preset=args.preset, attention=args.attention, xla_flags=os.environ.get("XLA_FLAGS"),
                              torch_threads=torch.get_num_threads(), **rows[-1])), flush=True)
    for row in rows:
        print(report(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
