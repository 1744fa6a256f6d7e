"""CMAB attention capture: mmjax's fused capture vs transformers with output_attentions=True.

  python tools/bench/cmab.py [--lengths 512 2048 4096] [--new-tokens 16] [--repeats 3] [--quick]

The BENCH.md `bench` model (random, transformers eager attention, the same weights loaded
into mmjax), batch 1, a prompt of the given length holding one 448x448 photo (256 image
tokens), greedy, fixed length. Each side generates the answer AND produces the per-layer,
per-head image / text / pre-image-text attention masses of every generated token, then both
CMAB scores (SPEC.md 2.2):
  * mmjax: `generate(..., capture="cmab")` (masses reduced inside the jitted attention) and
    `mmjax.difficulty.cmab.score_rollout`;
  * transformers: `generate(output_attentions=True, return_dict_in_generate=True)` and the
    same masses reduced from the returned attention maps (what the released code does).
Per length, time and memory come from fresh subprocesses:
  * time: one process loads both, warms each up (mmjax compiles there, reported apart), then
    alternates their calls round by round; medians of the repeats. (Timed in separate
    processes one after the other, the ratio at 4096 moved 2.4-3.7x between runs: this
    machine's speed drifts by tens of percent over a minute.)
  * memory: one process per system makes one call; its peak RSS minus its RSS after loading
    the model (for mmjax this includes compilation, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate as bench  # noqa: E402  (the bench model and inputs)

LEAD_TEXT = 16
CODE_LAYER_FRACTION = 20 / 28  # the released code's layer 20 of 28, at the same relative depth


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prompt(length: int) -> dict[str, np.ndarray]:
    """One prompt of exactly `length` tokens: text, one photo, text."""
    b = bench.prompts(1, LEAD_TEXT)
    n_image = int(np.prod(b["image_grid_thw"][0])) // 4
    tail = length - LEAD_TEXT - n_image - 2
    if tail < 1:
        raise ValueError(f"--lengths must exceed {LEAD_TEXT + n_image + 2} (the photo alone); got {length}")
    rng = np.random.default_rng(1)
    ids = np.concatenate([b["input_ids"][0, :LEAD_TEXT + n_image + 2], rng.integers(0, bench.BOS, tail)])
    b["input_ids"] = ids[None].astype(np.int64)
    b["attention_mask"] = np.ones_like(b["input_ids"])
    return b


def run_mmjax(model_dir: str, batch, new_tokens: int):
    from mmjax.difficulty import cmab
    from mmjax.models.qwen2_5_vl import load_hf
    model = load_hf(model_dir, progress=False)
    layer = round(CODE_LAYER_FRACTION * model.config.text.num_hidden_layers)

    def run():
        r = model.generate(**batch, max_new_tokens=new_tokens, eos_token_ids=[], capture="cmab")
        correct = np.ones(r.tokens.shape[0], bool)
        return [cmab.score_rollout(r, correct, cmab.CmabConfig("paper")).scores[0],
                cmab.score_rollout(r, correct, cmab.CmabConfig("code", layer=layer)).scores[0]]
    return run


def run_transformers(model_dir: str, batch, new_tokens: int):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, attn_implementation="eager",
                                                               dtype=torch.float32).eval()
    n_layers = model.config.text_config.num_hidden_layers
    layer = round(CODE_LAYER_FRACTION * n_layers)
    ids = batch["input_ids"]
    t = ids.shape[1]
    visual = ids[0] == bench.IMAGE
    before = np.arange(t) < visual.argmax()
    groups = torch.from_numpy(np.stack([visual, ~visual, before & ~visual], -1).astype(np.float32))
    sizes = groups.sum(0)
    tensor = lambda x: torch.from_numpy(np.asarray(x))

    def run():
        with torch.no_grad():
            out = model.generate(
                input_ids=tensor(ids), attention_mask=tensor(batch["attention_mask"]),
                pixel_values=tensor(batch["pixel_values"]), image_grid_thw=tensor(batch["image_grid_thw"]),
                mm_token_type_ids=tensor(visual[None].astype(np.int64)), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, eos_token_id=bench.EOS, pad_token_id=bench.PAD,
                output_attentions=True, return_dict_in_generate=True)
            # step j, layer l: [1, H, q, keys]; the last query row over the prompt keys.
            m = torch.stack([torch.stack([a[0, :, -1, :t] for a in step]) for step in out.attentions])
            m = torch.einsum("jlhs,sg->jlg", m.double(), groups.double()) / m.shape[2]  # heads averaged
        rho = m[:, 1:n_layers - 1, 0] / m[:, 1:n_layers - 1, 1]
        paper = torch.exp(torch.log(rho + 1e-8).mean(1)).mean()
        code = (m[1:, layer, 0] / sizes[0]).sum() / (m[1:, layer, 2] / sizes[2]).sum()
        return [float(paper), float(code)]
    return run


def _seconds(run) -> tuple[float, list[float]]:
    start = time.perf_counter()
    scores = run()
    return time.perf_counter() - start, scores


def child(args) -> None:
    batch = prompt(args.length)
    if args.child == "timing":  # both systems, calls alternating
        runs = {"mmjax": run_mmjax(args.model_dir, batch, args.new_tokens),
                "transformers": run_transformers(args.model_dir, batch, args.new_tokens)}
        first = {name: _seconds(run) for name, run in runs.items()}
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(_seconds(run)[0])
        print(json.dumps({name: dict(time_s=statistics.median(times[name]), times=times[name],
                                     first_call_s=first[name][0], scores=first[name][1]) for name in runs}))
        return
    make = run_mmjax if args.child == "mmjax" else run_transformers
    run = make(args.model_dir, batch, args.new_tokens)
    base = rss_mb()
    run()
    print(json.dumps(dict(rss_after_load_mb=base, added_peak_mb=peak_rss_mb() - base)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 4096])
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 new tokens, 1 repeat")
    ap.add_argument("--child", choices=["mmjax", "transformers", "timing"], help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 8, 1
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory() as tmp:
        bench.build_bench_model(tmp, attn="eager")
        rows = []
        for length in args.lengths:
            def call(child):
                cmd = [sys.executable, os.path.abspath(__file__), "--child", child, "--length", str(length),
                       "--model-dir", tmp, "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                return json.loads(out.strip().splitlines()[-1])
            res = call("timing")
            for system in ("mmjax", "transformers"):
                res[system].update(call(system))
            mm, hf = res["mmjax"], res["transformers"]
            rows.append(dict(length=length, new_tokens=args.new_tokens, **{f"{k}": v for k, v in res.items()},
                             speedup=hf["time_s"] / mm["time_s"],
                             memory_ratio=hf["added_peak_mb"] / max(mm["added_peak_mb"], 1e-3)))
            print(json.dumps(rows[-1]), flush=True)
    print("\nprompt  mmjax s  hf s   speedup | mmjax +MB  hf +MB  ratio | scores paper/code (mmjax vs hf)")
    for r in rows:
        mm, hf = r["mmjax"], r["transformers"]
        print(f"{r['length']:6d} {mm['time_s']:8.2f} {hf['time_s']:6.2f} {r['speedup']:7.2f}x | "
              f"{mm['added_peak_mb']:9.0f} {hf['added_peak_mb']:7.0f} {r['memory_ratio']:5.1f}x | "
              f"{mm['scores'][0]:.5f}/{mm['scores'][1]:.5f} vs {hf['scores'][0]:.5f}/{hf['scores'][1]:.5f}")
    print("targets at 4096: >= 4x faster, >= 10x less added memory")


if __name__ == "__main__":
    main()
