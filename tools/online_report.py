"""The table and plot of the online-difficulty grid (configs/online.py:demo; issue 23 section 4).

    python tools/online_report.py W

Reads what has finished in the sweep workdir W:
  W/runs/eval_base/eval/results.json             the warm-up model's held-out score
  W/runs/eval_<arm>_s<seed>_<step>/eval/results.json   each arm's checkpoints' held-out scores
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

EVAL = re.compile(r"eval_(?P<arm>[a-z]+)_s(?P<seed>\d+)_(?P<step>\d+)$")
BENCHMARK = "qa"  # configs/paradigms.py's demo eval: the held-out graded rows


def _score(run_dir: str) -> float | None:
    path = os.path.join(run_dir, "eval", "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return 100.0 * float(json.load(f)["benchmarks"][BENCHMARK]["score"])


def collect(workdir: str) -> dict:
    runs = os.path.join(workdir, "runs")
    scores: dict[str, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))  # arm -> step -> seed
    for name in sorted(os.listdir(runs)):
        match = EVAL.match(name)
        score = _score(os.path.join(runs, name)) if match else None
        if score is not None:
            scores[match["arm"]][int(match["step"])][int(match["seed"])] = score
    training: dict[str, dict] = {}
    for arm in scores:
        rows = {seed: read_metrics(os.path.join(runs, f"{arm}_s{seed}")) for seed in range(10)}
        rows = {seed: r for seed, r in rows.items() if r}
        zero_std = [float(np.mean([r["frac_reward_zero_std"] for r in steps])) for steps in rows.values()]
        last = [steps[-1] for steps in rows.values()]
        training[arm] = {
            "zero_std_share": zero_std,
            "passed_over": [float(sum(r.get("online/passed_over", 0) for r in steps)) for steps in rows.values()],
            "retired_at_end": [r.get("online/retired", 0.0) for r in last],
            "mean_pass_rate_drawn": [float(np.nanmean([r.get("online/mean_pass_rate_drawn", np.nan) for r in steps]))
                                     for steps in rows.values()]}
    return {"base": _score(os.path.join(runs, "eval_base")),
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
    lines = [f"Held-out accuracy, % (mean over seeds, range in brackets); warm-up model: "
             f"{report['base']:.1f}" if report["base"] is not None else "Held-out accuracy, %", "",
             "| arm | " + " | ".join(f"step {s}" for s in steps) + " | zero-variance groups | passed over |",
             "|---|" + "---:|" * (len(steps) + 2)]
    for arm, by_step in report["scores"].items():
        t = report["training"].get(arm, {})
        zero = _cell([100 * v for v in t.get("zero_std_share", [])])
        lines.append(f"| {arm} | " + " | ".join(_cell(by_step.get(s, {}).values()) for s in steps)
                     + f" | {zero} | {_cell(t.get('passed_over', []))} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, by_step in report["scores"].items():
        steps = sorted(by_step)
        values = [list(by_step[s].values()) for s in steps]
        x = [0] + steps if report["base"] is not None else steps
        mean = ([report["base"]] if report["base"] is not None else []) + [float(np.mean(v)) for v in values]
        line, = ax.plot(x, mean, marker="o", label=arm)
        lo = ([report["base"]] if report["base"] is not None else []) + [min(v) for v in values]
        hi = ([report["base"]] if report["base"] is not None else []) + [max(v) for v in values]
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out accuracy, %")
    ax.set_title("online difficulty vs offline mid+hard (demo, seeds' range shaded)")
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
