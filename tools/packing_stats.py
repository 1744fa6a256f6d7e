"""What a packed GRPO update costs at a given scale (issue 24): `mmjax.rl.packing` run on simulated
ragged completions, host side only (no JAX, no model).

    python tools/packing_stats.py [--prompts 8] [--generations 8] [--width 1024] [--mean 0.3] [--steps 300]

Each step draws prompts x generations completion lengths, 1 + Geometric(p = 1 / (mean x width)) cut at
the width (the long-tailed law of tools/bench/update_ragged.py), and packs them as
`grpo.update_layout=auto` would, per prompt and pooled. For each layout it prints the share of steps
auto packs (rows at most AUTO_MAX_ROWS_SHARE of the completions; the others run padded), the distinct
packed row counts those steps meet (each compiles one update program, and one for each log-prob pass),
and the token slots the update runs per real completion token (padded: width / mean length).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np

from mmjax.rl import packing


def lengths_law(rng, n: int, width: int, mean: float) -> np.ndarray:
    return np.minimum(rng.geometric(1.0 / (mean * width), size=n), width)


def simulate(prompts: int, generations: int, width: int, mean: float, steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = prompts * generations
    real = 0
    slots = {"padded": 0, "per_prompt": 0, "pooled": 0}
    counts = {"per_prompt": collections.Counter(), "pooled": collections.Counter()}
    for _ in range(steps):
        lengths = lengths_law(rng, n, width, mean)
        real += int(lengths.sum())
        slots["padded"] += n * width
        for layout in counts:
            p = packing.pack(lengths, generations, width, pooled=layout == "pooled")
            rows = p.row.shape[0]
            if packing.worth_packing(p.rows_per_prompt, n if p.pooled else generations):
                counts[layout][rows] += 1
                slots[layout] += rows * width
            else:  # auto runs this step padded
                slots[layout] += n * width
    out = {"prompts": prompts, "generations": generations, "width": width, "mean": mean, "steps": steps,
           "padded": {"slots_per_token": slots["padded"] / real}}
    for layout, seen in counts.items():
        out[layout] = {"packed_steps": sum(seen.values()) / steps, "row_counts": dict(sorted(seen.items())),
                       "programs": len(seen), "slots_per_token": slots[layout] / real}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8, help="prompts a micro-batch")
    ap.add_argument("--generations", type=int, default=8, help="G, completions a prompt")
    ap.add_argument("--width", type=int, default=1024, help="the completion bucket (max_completion_length)")
    ap.add_argument("--mean", type=float, default=0.3, help="mean completion length as a share of the width")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 < args.mean <= 1:
        ap.error(f"--mean must lie in (0, 1], got {args.mean}")
    r = simulate(args.prompts, args.generations, args.width, args.mean, args.steps, args.seed)
    print(f"{args.prompts} prompts x G={args.generations}, width {args.width}, lengths 1 + Geometric(1 / "
          f"({args.mean} x {args.width})) cut at the width, {args.steps} steps (seed {args.seed}):")
    print(f"  padded: {r['padded']['slots_per_token']:.3f} slots a real token")
    for layout in ("per_prompt", "pooled"):
        x = r[layout]
        print(f"  {layout}: auto packs {x['packed_steps']:.0%} of steps, {x['programs']} row counts "
              f"{x['row_counts']}, {x['slots_per_token']:.3f} slots a real token")
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
