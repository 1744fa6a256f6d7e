"""Decode throughput of mmjax's sampler vs transformers' `generate`, same model, same inputs.

  python tools/bench/generate.py [--repeats 5] [--batch 8] [--new-tokens 64] [--quick]

The BENCH.md `bench` model (random, built with transformers from a config dict, saved as an
HF folder and loaded into mmjax with `load_hf`), batch 8, each prompt one 448x448 photo
(256 merged image tokens) and 32 text tokens, greedy, fixed length (no stop token).
Decode tokens/s = batch x (new_tokens - 1) / (time(generate new_tokens) - time(generate 1)),
so the prefill is excluded; the full generate time is printed too. Compilation (mmjax)
and the first call (both) are warm-ups, reported apart; timings are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from mmjax.models.qwen2_5_vl import load_hf
from mmjax.models.qwen2_5_vl.config import PRESETS
from mmjax.processing.image import preprocess_images

# Special tokens at the top of the bench model's 8192-token vocabulary.
BOS, EOS, PAD, VSTART, VEND, IMAGE, VIDEO = 8185, 8186, 8187, 8188, 8189, 8190, 8191
IMAGE_SIDE = 448


def bench_hf_config(attn: str = "sdpa"):
    """transformers config of BENCH.md's `bench` model (the `bench` preset, in-vocab special ids)."""
    from transformers import Qwen2_5_VLConfig
    d = PRESETS["bench"].to_hf_dict()
    d.update(image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART, vision_end_token_id=VEND)
    d["text_config"].update(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    d.pop("architectures")
    d.pop("model_type")
    cfg = Qwen2_5_VLConfig(**d)
    cfg._attn_implementation = attn
    return cfg


def build_bench_model(out_dir: str, seed: int = 0, attn: str = "sdpa"):
    """A random `bench` model in transformers, saved to out_dir (float32, eval mode)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(bench_hf_config(attn)).eval()
    model.save_pretrained(out_dir)
    return model


def photos(n: int) -> list[np.ndarray]:
    import skimage.data
    from PIL import Image
    sources = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()]
    return [np.asarray(Image.fromarray(sources[i % len(sources)]).resize((IMAGE_SIDE, IMAGE_SIDE)))
            for i in range(n)]


def prompts(batch: int, text_tokens: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`batch` prompts: text, <vision_start> image placeholders <vision_end>, text (no padding)."""
    px = preprocess_images(photos(batch))
    grid = px["image_grid_thw"]
    n_image = int(np.prod(grid[0])) // 4
    rng = np.random.default_rng(seed)
    half = text_tokens // 2
    rows = [np.concatenate([rng.integers(0, BOS, half), [VSTART], np.full(n_image, IMAGE), [VEND],
                            rng.integers(0, BOS, text_tokens - half)]) for _ in range(batch)]
    ids = np.stack(rows).astype(np.int64)
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), pixel_values=px["pixel_values"],
                image_grid_thw=grid)


def hf_generate(model, batch, new_tokens: int, **kw):
    t = lambda x: torch.from_numpy(np.asarray(x))
    with torch.no_grad():
        return model.generate(input_ids=t(batch["input_ids"]), attention_mask=t(batch["attention_mask"]),
                              pixel_values=t(batch["pixel_values"]), image_grid_thw=t(batch["image_grid_thw"]),
                              mm_token_type_ids=t((batch["input_ids"] == IMAGE).astype(np.int64)),
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=EOS, pad_token_id=PAD, **kw)


def timed(calls: dict, repeats: int) -> tuple[dict, dict]:
    """First-call seconds and the median of `repeats` further calls, for each named call.

    The calls are interleaved round by round, so load drift on a shared machine hits all alike.
    """
    first, times = {}, {name: [] for name in calls}
    for name, fn in calls.items():
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return first, {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--text-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1 repeat (numbers are noisier)")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats

    with tempfile.TemporaryDirectory() as tmp:
        hf_model = build_bench_model(tmp)
        model = load_hf(tmp, progress=False)
    batch = prompts(args.batch, args.text_tokens)
    b, n = args.batch, args.new_tokens

    runs = {
        "transformers": lambda k: hf_generate(hf_model, batch, k),
        "mmjax": lambda k: model.generate(**batch, max_new_tokens=k, eos_token_ids=[]),
    }
    # Same tokens first: greedy outputs of both must agree, or the comparison is void.
    ref = hf_generate(hf_model, batch, n)[:, batch["input_ids"].shape[1]:].numpy()
    start = time.perf_counter()
    ours = model.generate(**batch, max_new_tokens=n, eos_token_ids=[]).tokens
    mmjax_first_call = time.perf_counter() - start  # includes compiling encode, prefill and decode
    agree = float((ref == ours).mean())
    calls = {(name, k): (lambda run=run, k=k: run(k)) for name, run in runs.items() for k in (n, 1)}
    first, median = timed(calls, repeats)
    results = {name: dict(generate_s=median[name, n], prefill_plus_1_s=median[name, 1],
                          warmup_calls_s=first[name, n] + first[name, 1],
                          decode_tokens_per_s=b * (n - 1) / max(median[name, n] - median[name, 1], 1e-9))
               for name in runs}
    ratio = results["mmjax"]["decode_tokens_per_s"] / results["transformers"]["decode_tokens_per_s"]
    e2e = results["transformers"]["generate_s"] / results["mmjax"]["generate_s"]
    print(json.dumps(dict(xla_flags=os.environ.get("XLA_FLAGS"), torch_threads=torch.get_num_threads(),
                          batch=b, new_tokens=n, prompt_tokens=int(batch["input_ids"].shape[1]),
                          repeats=repeats, token_agreement=agree, mmjax_first_call_with_compile_s=mmjax_first_call,
                          results=results), indent=2))
    print(f"decode tokens/s: mmjax {results['mmjax']['decode_tokens_per_s']:.1f} vs transformers "
          f"{results['transformers']['decode_tokens_per_s']:.1f} -> {ratio:.2f}x (target >= 3x); "
          f"whole generate {e2e:.2f}x; greedy token agreement {agree:.3f}")


if __name__ == "__main__":
    main()
