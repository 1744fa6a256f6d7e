"""The table and plot of the grids of configs/online.py (issue 23 section 4): `:demo` (online
difficulty) and `:jigsaw` (adaptive jigsaw).

    python tools/online_report.py W

Reads what has finished in the sweep workdir W:
  W/runs/eval_base[_<grid>]/eval/results.json    the starting model's held-out score
  W/runs/eval_<arm>_s<seed>_<step>[_<grid>]/eval/results.json   each arm's checkpoints' held-out
                                                 scores (the jigsaw grid: at each held-out grid)
  W/runs/<arm>_s<seed>/metrics.jsonl             each arm's steps: frac_reward_zero_std (groups whose
                                                 rewards all match: no GRPO gradient), online/*
and writes W/online.json, W/online.md (mean and range over seeds at every evaluated step, the
share of zero-variance groups, the online counters) and W/online.png (held-out accuracy
against steps, one line per arm, the seeds' range shaded).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict

import numpy as np

from mmjax.train.metrics import read_metrics

EVAL = re.compile(r"eval_(?P<arm>[a-z0-9]+)_s(?P<seed>\d+)_(?P<step>\d+)(_(?P<grid>\d+x\d+))?$")
BASE = re.compile(r"eval_base(_(?P<grid>\d+x\d+))?$")


def _score(run_dir: str) -> float | None:
    path = os.path.join(run_dir, "eval", "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        benchmarks = json.load(f)["benchmarks"]
    (summary,) = benchmarks.values()  # one benchmark an eval: qa (online grid) or jigsaw (jigsaw grid)
    return 100.0 * float(summary["score"])


def _mean(values) -> float | None:
    """The mean of the numbers among `values` (a metric is null where it was NaN); None if none."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    return float(np.mean(numbers)) if numbers else None


def collect(workdir: str) -> dict:
    runs = os.path.join(workdir, "runs")
    scores: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # arm -> step -> seed
    base: dict[str, float] = {}  # held-out (grid or "") -> the starting model's score
    for name in sorted(os.listdir(runs)):
        match, start = EVAL.match(name), BASE.match(name)
        score = _score(os.path.join(runs, name)) if match or start else None
        if score is not None and match:
            label = match["arm"] + (f" @ {match['grid']}" if match["grid"] else "")
            scores[label][int(match["step"])][int(match["seed"])] = score
        elif score is not None:
            base[start["grid"] or ""] = score
    training: dict[str, dict] = {}
    for arm in {label.split(" @ ")[0] for label in scores}:
        rows = {seed: read_metrics(os.path.join(runs, f"{arm}_s{seed}")) for seed in range(10)}
        rows = {seed: r for seed, r in rows.items() if r}
        zero_std = [float(np.mean([r["frac_reward_zero_std"] for r in steps])) for steps in rows.values()]
        # The second half of the steps: on the demo, after every row was seen once (an epoch), where the
        # online policies start to pass rows over; the first epoch is the same draw for all of them.
        late = [float(np.mean([r["frac_reward_zero_std"] for r in steps if r["step"] > steps[-1]["step"] / 2]))
                for steps in rows.values()]
        last = [steps[-1] for steps in rows.values()]
        training[arm] = {
            "zero_std_share": zero_std, "zero_std_share_second_half": late,
            "passed_over": [float(sum(r.get("online/passed_over", 0) for r in steps)) for steps in rows.values()],
            "retired_at_end": [r.get("online/retired", 0.0) for r in last],
            "mean_pass_rate_drawn": [_mean([r.get("online/mean_pass_rate_drawn") for r in steps])
                                     for steps in rows.values()],
            "jigsaw_pieces_at_end": [r.get("jigsaw/jigsaw_image/difficulty") for r in last]}
    return {"base": base,
            "scores": {arm: {step: dict(seeds) for step, seeds in sorted(by_step.items())}
                       for arm, by_step in scores.items()},
            "training": training}


def _cell(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def markdown(report: dict) -> str:
    steps = sorted({step for by_step in report["scores"].values() for step in by_step})
    lines = ["Held-out score, % (mean over seeds, range in brackets); step 0 = the starting model", "",
             "| arm | step 0 | " + " | ".join(f"step {s}" for s in steps)
             + " | zero-variance groups, % | the same, second half of the steps | records passed over |",
             "|---|---:|" + "---:|" * (len(steps) + 3)]
    for label, by_step in report["scores"].items():
        t = report["training"].get(label.split(" @ ")[0], {})
        zero = (f"{_cell([100 * v for v in t.get('zero_std_share', [])])} | "
                f"{_cell([100 * v for v in t.get('zero_std_share_second_half', [])])}")
        start = _base_of(report, label)
        lines.append(f"| {label} | {'-' if start is None else f'{start:.1f}'} | "
                     + " | ".join(_cell(by_step.get(s, {}).values()) for s in steps)
                     + f" | {zero} | {_cell(t.get('passed_over', []))} |")
    return "\n".join(lines) + "\n"


def _base_of(report: dict, label: str) -> float | None:
    """The starting model's score on the held-out set of `label` ("arm @ 3x3": the 3x3 one)."""
    grid = label.split(" @ ")[1] if " @ " in label else ""
    return report["base"].get(grid)


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, by_step in report["scores"].items():
        steps = sorted(by_step)
        values = [list(by_step[s].values()) for s in steps]
        start = _base_of(report, label)
        first = [] if start is None else [start]
        x = ([0] if first else []) + steps
        line, = ax.plot(x, first + [float(np.mean(v)) for v in values], marker="o", label=label)
        ax.fill_between(x, first + [min(v) for v in values], first + [max(v) for v in values],
                        color=line.get_color(), alpha=0.15)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out score, %")
    ax.set_title("held-out score against steps (mean of seeds, their range shaded)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir")
    args = parser.parse_args(argv)
    report = collect(args.workdir)
    with open(os.path.join(args.workdir, "online.json"), "w") as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with open(os.path.join(args.workdir, "online.md"), "w") as f:
        f.write(text)
    plot(report, os.path.join(args.workdir, "online.png"))
    print(text)


if __name__ == "__main__":
    main()
