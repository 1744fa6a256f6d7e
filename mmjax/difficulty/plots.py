"""PNG plots of a score file, written next to it (matplotlib, Agg backend: no display needed).

  pism_survival.png  PISM survival: the share of each level's samples that survive (pass@K)
                     each mask ratio, and their mean pass rate (passes / K), per level;
  levels.png         level counts of both methods;
  cmab_scores.png    distributions of the two CMAB scores, with the fixed thresholds on the
                     definition that made the levels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.difficulty import pism as pism_lib

LEVEL_ORDER = ("unsolved", "easy", "medium", "hard", "unscored")
COLOURS = {"unsolved": "tab:gray", "easy": "tab:green", "medium": "tab:orange", "hard": "tab:red",
           "unscored": "tab:purple"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def survival(records: Sequence[Mapping[str, Any]], path: str) -> str | None:
    """Survival and pass rate against mask ratio, one line per PISM level (None: no PISM records)."""
    rows = [r for r in records if r["pism_level"] and r["ratios"]]
    if not rows:
        return None
    plt = _pyplot()
    ratios = np.asarray(rows[0]["ratios"], np.float64)
    fig, (ax_s, ax_p) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for level in LEVEL_ORDER:
        curves = [r for r in rows if r["pism_level"] == level and len(r["passes"]) == len(ratios)]
        if not curves:
            continue
        passes = np.asarray([r["passes"] for r in curves], np.float64)
        passes[passes == pism_lib.NOT_RUN] = np.nan  # early-stopped ratios are unknown, not failures
        rate = passes / np.asarray([r["attempts"] for r in curves], np.float64)[:, None]
        label = f"{level} ({len(curves)})"
        alive = np.where(np.isnan(rate), np.nan, (rate > 0).astype(np.float64))
        with warnings.catch_warnings():  # a ratio every curve of a level skipped: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            ax_s.plot(ratios, np.nanmean(alive, axis=0), "o-", color=COLOURS[level], label=label)
            ax_p.plot(ratios, np.nanmean(rate, axis=0), "o-", color=COLOURS[level], label=label)
    ax_s.set_title("survival (pass@K)")
    ax_p.set_title("mean pass rate (passes / K)")
    for ax in (ax_s, ax_p):
        ax.set_xlabel("mask ratio"), ax.set_ylim(-0.02, 1.02), ax.grid(alpha=0.3)
    ax_s.legend(title="PISM level", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def level_histograms(records: Sequence[Mapping[str, Any]], path: str) -> str:
    """Level counts of PISM and CMAB side by side (a method that did not run shows no bars)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, column, title in zip(axes, ("pism_level", "cmab_level"), ("PISM", "CMAB")):
        names = pism_lib.LEVELS if column == "pism_level" else LEVEL_ORDER  # only CMAB has `unscored`
        counts = [sum(1 for r in records if r[column] == level) for level in names]
        bars = ax.bar(names, counts, color=[COLOURS[level] for level in names])
        ax.bar_label(bars, fontsize=8)
        ax.set_title(f"{title} levels ({sum(counts)} samples)")
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def cmab_scores(records: Sequence[Mapping[str, Any]], path: str, thresholds: Sequence[float] = (),
                definition: str = "paper") -> str | None:
    """Histograms of the `paper` and `code` scores of correctly answered samples (None: no CMAB records);
    the level thresholds are drawn on the definition that made the levels."""
    rows = [r for r in records if r["cmab_level"]]
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, column in zip(axes, ("cmab_paper", "cmab_code")):
        values = np.asarray([r[column] for r in rows if r["correct"]], np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            ax.hist(values, bins=min(40, max(5, values.size // 2)), color="tab:blue", alpha=0.8)
            for t in thresholds if column == f"cmab_{definition}" else ():
                ax.axvline(t, color="k", ls="--", lw=0.8)
        else:
            ax.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=ax.transAxes)
        name = column.split("_")[1]
        levelled = " (levels)" if name == definition else ""
        ax.set_title(f"CMAB `{name}` score{levelled}: {values.size} correct samples", fontsize=10)
        ax.set_xlabel("image / text attention balance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(records: Sequence[Mapping[str, Any]], directory: str, cmab_thresholds: Sequence[float] = (),
              cmab_definition: str = "paper") -> list[str]:
    """Every plot that applies to these records, in `directory`; returns the paths written."""
    out = [survival(records, os.path.join(directory, "pism_survival.png")),
           level_histograms(records, os.path.join(directory, "levels.png")),
           cmab_scores(records, os.path.join(directory, "cmab_scores.png"),
                       [t for t in cmab_thresholds if math.isfinite(t)], cmab_definition)]
    return [p for p in out if p]
