"""PNG plots of a GRPO run's online difficulty, from its metrics.jsonl (matplotlib, Agg backend).

  W/report/online.png   the rows' levels over steps (online/levels/*), the retired rows and the
                        step's re-tries and passed-over records, the mean estimated pass rate
                        of the rows drawn;
  W/report/jigsaw.png   with adaptive jigsaw: each task's size (pieces) and running solve rate.

    paths = write(workdir)   # after training; the plots that have data, by name
"""

from __future__ import annotations

import math
import os

from mmjax.difficulty.plots import COLOURS, _pyplot
from mmjax.train.metrics import read_metrics

REPORT = "report"
LEVELS = ("unsolved", "hard", "medium", "easy", "unseen")


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, skipping steps without a number."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return [s for s, _ in points], [v for _, v in points]


def online(rows: list[dict], path: str) -> str | None:
    """Levels, retirements and the drawn rows' pass rate over steps (None: no online metrics)."""
    if not any("online/levels/unseen" in r for r in rows):
        return None
    plt = _pyplot()
    fig, (levels, draws, rate) = plt.subplots(1, 3, figsize=(13, 3.6))
    for level in LEVELS:
        levels.plot(*_series(rows, f"online/levels/{level}"), label=level, color=COLOURS.get(level, "tab:blue"))
    levels.set(title="rows by estimated level", xlabel="step", ylabel="rows")
    levels.legend(fontsize=8)
    for key, label in (("online/retired", "retired rows"), ("online/retried", "re-tries drawn"),
                       ("online/passed_over", "records passed over")):
        draws.plot(*_series(rows, key), label=label)
    draws.set(title="band / weighted draws", xlabel="step", ylabel="count")
    draws.legend(fontsize=8)
    rate.plot(*_series(rows, "online/mean_pass_rate_drawn"), label="rows drawn")
    rate.plot(*_series(rows, "frac_reward_zero_std"), label="zero-variance groups (share)")
    rate.set(title="estimated pass rate of the rows drawn", xlabel="step", ylim=(0, 1))
    rate.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def jigsaw(rows: list[dict], path: str) -> str | None:
    """Each adaptive task's size and running solve rate over steps (None: no adaptive jigsaw)."""
    tasks = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("jigsaw/") and k.endswith("/difficulty")})
    if not tasks:
        return None
    plt = _pyplot()
    fig, (size, solved) = plt.subplots(1, 2, figsize=(9, 3.6))
    for task in tasks:
        size.step(*_series(rows, f"jigsaw/{task}/difficulty"), where="post", label=task)
        solved.plot(*_series(rows, f"jigsaw/{task}/solve_rate"), label=task)
    size.set(title="puzzle size", xlabel="step", ylabel="pieces")
    solved.set(title="running exact-solve rate", xlabel="step", ylim=(0, 1))
    size.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(workdir: str) -> list[str]:
    """The plots of W/metrics.jsonl that have data, in W/report/; their paths."""
    rows = read_metrics(workdir)
    out_dir = os.path.join(workdir, REPORT)
    os.makedirs(out_dir, exist_ok=True)
    made = [online(rows, os.path.join(out_dir, "online.png")), jigsaw(rows, os.path.join(out_dir, "jigsaw.png"))]
    return [p for p in made if p]
