"""The paradigm grid's table (issue 21 section 4): `python -m mmjax.sweep report W [--published pism_vrt]`.

Reads a sweep workdir W built by configs/paradigms.py, from whatever has finished:
  W/runs/eval_<row>/eval/results.json   each evaluation's scores (mmjax.jobs.eval.write_results)
  W/runs/<run>/selection.json           a training run's selected rows ("selected"; mmjax.difficulty)
  W/runs/<run>/metrics.jsonl            a training run's steps (the largest "step")
and writes
  W/paradigms.json   rows (the base model first, then the grid's rows in its order), each with its
                     scores in % (2 decimals) per benchmark and their mean, each training stage's
                     rows and steps (SFT then GRPO; null where unknown), and the best per column;
  W/paradigms.md     the same as a table, best values in bold, "-" where unknown, "pending" for a
                     row whose evaluation has not finished, "failed (<run>)" for one whose stage or
                     eval failed (W/runs/<run>/sweep_state.json; its log says why);
  W/paradigms.png    a grouped bar chart: one group per benchmark (and the mean), one bar per row.

Columns are the benchmarks of every finished evaluation (their union) and their mean (over every
column; a row lacking one has no mean). Rows are the base model and each grid row with a run
folder (W/runs/<row>, its SFT stage's or W/runs/eval_<row>); other W/runs/eval_* folders follow, by name.

`--published TABLE` puts the paper's published numbers (PUBLISHED, from SPEC 2.4) beside ours as
reference rows labelled "paper: <row>". They are never mixed into our rows and never count for the
best-per-column marks. SPEC 2.4 lists only a few of the paper's numbers (PISM / reasoning data:
GRPO on mid+hard and on the full set; CMAB / reasoning: mid+hard's MathVista); the other tables
are empty registries until someone types their numbers in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from mmjax.sweep import state

PROG = "mmjax.sweep report"
BASE = "base"
MEAN = "mean"
# The grid's rows in configs/paradigms.py's order (its get_sweep; tests/sweep/test_paradigms.py).
GRID = (["grpo_full", "grpo_unsolved", "grpo_random", "grpo_midhard"]
        + [f"sft_{x}__grpo_{y}" for x, y in [("mid", "mid"), ("mid", "hard"), ("hard", "mid"), ("hard", "hard"),
                                              ("rand_m", "rand_m"), ("rand_m", "rand_h"), ("rand_h", "rand_m"),
                                              ("rand_h", "rand_h")]])
RESULTS = os.path.join("eval", "results.json")  # mmjax.jobs.eval: <workdir>/eval/results.json
SELECTION = "selection.json"  # mmjax.difficulty.selection_report.REPORT (not imported: it pulls in jax)
METRICS = "metrics.jsonl"  # mmjax.train.metrics.METRICS_FILE (not imported: it pulls in jax)
FILES = ("paradigms.json", "paradigms.md", "paradigms.png")

# The paper's published numbers, in %, by table (<method>_<sizes>, as configs/paradigms.py's
# arguments) -> grid row -> benchmark. SPEC 2.4 gives MMMU and MMStar as fractions (0.547):
# written here as %. A benchmark mmjax does not read (mmvet) is kept: the json carries it; the
# table and the chart show only our columns.
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "pism_vrt": {
        "grpo_full": dict(mathvista=53.4, mmvet=41.7, ocrbench=76.2, hallusionbench=67.4, mmmu=44.0, mmstar=60.7),
        "grpo_midhard": dict(mathvista=68.3, mmvet=48.3, ocrbench=77.8, hallusionbench=68.8, mmmu=54.7, mmstar=63.9),
    },
    "pism_vpt": {},
    "cmab_vrt": {"grpo_midhard": dict(mathvista=69.0)},
    "cmab_vpt": {},
}


class ReportError(ValueError):
    pass


def label(row: str) -> str:
    """A row's paradigm in words: base model, GRPO(midhard), SFT(mid) + GRPO(hard)."""
    if row == BASE:
        return "base model"
    if row.startswith("sft_") and "__grpo_" in row:
        x, y = row[len("sft_"):].split("__grpo_", 1)
        return f"SFT({x}) + GRPO({y})"
    if row.startswith("grpo_"):
        return f"GRPO({row[len('grpo_'):]})"
    return row


def stages(row: str) -> list[tuple[str, str]]:
    """(stage, run) of each training stage of a row: sft_X__grpo_Y is sft_X then itself."""
    if row == BASE:
        return []
    if row.startswith("sft_") and "__grpo_" in row:
        return [("sft", row.split("__grpo_", 1)[0]), ("grpo", row)]
    if row.startswith("grpo_"):
        return [("grpo", row)]
    return [("train", row)]


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _steps(run_dir: str) -> int | None:
    """The largest "step" of run_dir/metrics.jsonl (a line cut short by a crash is ignored)."""
    try:
        with open(os.path.join(run_dir, METRICS), encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    steps = []
    for line in lines:
        try:
            step = json.loads(line).get("step") if line.strip() else None
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int | float):
            steps.append(int(step))
    return max(steps) if steps else None


def _rows_selected(run_dir: str) -> int | None:
    report = _read_json(os.path.join(run_dir, SELECTION))
    n = report.get("selected") if isinstance(report, dict) else None
    return int(n) if isinstance(n, int | float) else None


def _failed_run(runs: str, row: str) -> str | None:
    """The first of a row's runs (its stages, then its eval) whose sweep state says failed."""
    for run in [r for _, r in stages(row)] + [f"eval_{row}"]:
        if (state.read(os.path.join(runs, run)) or {}).get("state") == state.FAILED:
            return run
    return None


def _row_names(runs: str) -> list[str]:
    present = set(os.listdir(runs)) if os.path.isdir(runs) else set()
    # A row whose SFT stage failed has no folder of its own: it is listed, as failed.
    rows = [r for r in GRID if r in present or f"eval_{r}" in present or _failed_run(runs, r)]
    extra = sorted(d[len("eval_"):] for d in present
                   if d.startswith("eval_") and d != f"eval_{BASE}" and d[len("eval_"):] not in GRID)
    return [BASE, *rows, *extra]


def _pct(x: Any) -> float | None:
    return round(100.0 * float(x), 2) if isinstance(x, int | float) else None


def _mean(scores: dict[str, float | None], columns: Sequence[str]) -> float | None:
    values = [scores.get(c) for c in columns]
    if not columns or any(v is None for v in values):
        return None
    return round(sum(values) / len(values), 2)


def build(workdir: str, published: str | None = None) -> dict[str, Any]:
    """The report of W as a JSON-able dict (nothing written)."""
    if published is not None and published not in PUBLISHED:
        raise ReportError(f"--published {published!r}: not one of {sorted(PUBLISHED)}")
    runs = os.path.join(workdir, "runs")
    rows, benchmarks = [], []
    for name in _row_names(runs):
        results = _read_json(os.path.join(runs, f"eval_{name}", RESULTS))
        found = results.get("benchmarks") if isinstance(results, dict) else None
        found = found if isinstance(found, dict) and found else None
        scores = {}
        for bench, summary in (found or {}).items():
            scores[bench] = _pct(summary.get("score")) if isinstance(summary, dict) else None
            if bench not in benchmarks:
                benchmarks.append(bench)
        failed = None if found else _failed_run(runs, name)
        rows.append({"name": name, "paradigm": label(name), "eval_run": f"eval_{name}",
                     "status": "done" if found else "failed" if failed else "pending",
                     **({"failed_run": failed} if failed else {}), "scores": scores,
                     "n": {b: s.get("n") for b, s in (found or {}).items() if isinstance(s, dict)},
                     "stages": [{"stage": stage, "run": run, "rows": _rows_selected(os.path.join(runs, run)),
                                 "steps": _steps(os.path.join(runs, run))} for stage, run in stages(name)]})
    columns = [*benchmarks, MEAN]
    for row in rows:
        if row["status"] == "done":
            row["scores"] = {b: row["scores"].get(b) for b in benchmarks}
            row["scores"][MEAN] = _mean(row["scores"], benchmarks)
        else:
            row["scores"] = {c: None for c in columns}
    best = {}
    for c in columns:
        values = [r["scores"][c] for r in rows if r["scores"][c] is not None]
        best[c] = [r["name"] for r in rows if values and r["scores"][c] == max(values)]
    for row in rows:
        row["best"] = {c: row["name"] in best[c] for c in columns}
    reference = None
    if published is not None:
        reference = {"table": published, "source": "SPEC 2.4 (the paper's published numbers, %)", "rows": []}
        for name, values in PUBLISHED[published].items():
            scores = {b: values.get(b) for b in benchmarks}
            scores[MEAN] = _mean(scores, benchmarks)
            reference["rows"].append({"name": f"paper: {name}", "row": name, "paradigm": label(name),
                                      "scores": scores, "all": dict(values)})
    return {"workdir": os.path.abspath(workdir), "benchmarks": benchmarks, "columns": columns,
            "unit": "% (2 decimals); mean over every column, none when a row lacks one",
            "rows": rows, "best": best, "published": reference}


def _cell(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "-"
    return f"**{value:.2f}**" if bold else f"{value:.2f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    columns = report["columns"]
    head = ["paradigm", "run", *columns, "SFT rows", "SFT steps", "GRPO rows", "GRPO steps"]
    lines = ["# The paradigm grid", "",
             f"Scores in % (best per column in bold; the mean is over {', '.join(report['benchmarks']) or 'no'} "
             f"benchmarks). Rows and steps: each training stage's selected rows and optimizer steps.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        by_stage = {s["stage"]: s for s in row["stages"]}
        grpo = by_stage.get("grpo") or by_stage.get("train") or {}
        sft = by_stage.get("sft") or {}
        if row["status"] == "done":
            cells = [_cell(row["scores"][c], row["best"][c]) for c in columns]
        else:  # "failed (sft_mid)": the run whose log says why (e.g. a level the scoring left empty)
            cells = [f"failed ({row['failed_run']})" if row["status"] == "failed" else "pending"] * len(columns)
        lines.append("| " + " | ".join([row["paradigm"], row["name"], *cells, _count(sft.get("rows")),
                                        _count(sft.get("steps")), _count(grpo.get("rows")),
                                        _count(grpo.get("steps"))]) + " |")
    reference = report.get("published")
    if reference is not None:
        lines += ["", f"## Reference: the paper's published numbers, table {reference['table']} (SPEC 2.4, %)", "",
                  "Not our runs: never counted for the best-per-column marks.", ""]
        if not reference["rows"]:
            lines.append(f"SPEC lists no numbers for {reference['table']}.")
        else:
            head = ["paper row", *columns]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for row in reference["rows"]:
                lines.append("| " + " | ".join([row["name"], *(_cell(row["scores"][c]) for c in columns)]) + " |")
            others = sorted({b for r in reference["rows"] for b in r["all"]} - set(report["benchmarks"]))
            if others:
                lines += ["", f"The paper also reports {', '.join(others)} (in paradigms.json), which these "
                              f"evaluations do not have."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    columns = report["columns"]
    ours = [r for r in report["rows"] if r["status"] == "done"]
    paper = (report.get("published") or {}).get("rows") or []
    bars = [(r["paradigm"], r["scores"], None) for r in ours] + [(r["name"], r["scores"], "//") for r in paper]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(columns) * max(1, len(bars)) * 0.35 + 2), 4.5))
    if not bars or len(columns) <= 1:
        ax.text(0.5, 0.5, "no finished evaluations yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        width = 0.8 / len(bars)
        for k, (name, scores, hatch) in enumerate(bars):
            xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(columns))]
            ys = [scores.get(c) if scores.get(c) is not None else 0.0 for c in columns]
            ax.bar(xs, ys, width, label=name, hatch=hatch, edgecolor="black" if hatch else None, linewidth=0.5)
        ax.set_xticks(range(len(columns)), columns)
        ax.set_ylabel("score (%)")
        ax.set_title("The paradigm grid" + (f" (hatched: the paper, {report['published']['table']})"
                                            if paper else ""))
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png", bbox_inches="tight")  # the legend sits below the axes
    plt.close(fig)


def _replace(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def write(workdir: str, published: str | None = None) -> dict[str, Any]:
    """Builds the report of W and writes W/paradigms.{json,md,png}; the report."""
    if not os.path.isdir(workdir):
        raise ReportError(f"{workdir}: no such folder")
    report = build(workdir, published)
    json_path, md_path, png_path = (os.path.join(workdir, f) for f in FILES)

    def text(content: str):
        def put(tmp: str):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
        return put
    _replace(json_path, text(json.dumps(report, indent=2) + "\n"))
    _replace(md_path, text(markdown(report)))
    _replace(png_path, lambda tmp: plot(report, tmp))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description="Rebuild W/paradigms.{json,md,png} "
                                     "from whatever runs of the paradigm grid (configs/paradigms.py) have finished.")
    parser.add_argument("workdir", help="the sweep's folder (its runs in W/runs/<name>)")
    parser.add_argument("--published", choices=sorted(PUBLISHED), default=None,
                        help="put the paper's published numbers of this table beside ours, as reference rows")
    args = parser.parse_args(argv)
    try:
        report = write(args.workdir, args.published)
    except ReportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    done = sum(r["status"] == "done" for r in report["rows"])
    print(markdown(report), end="")
    print(f"wrote {', '.join(os.path.join(args.workdir, f) for f in FILES)} "
          f"({done} of {len(report['rows'])} rows evaluated)")
    return 0
