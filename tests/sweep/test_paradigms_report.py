"""mmjax.sweep.report, the paradigm grid's table (issue 21 section 4), on a hand-built sweep folder:
the base model and three rows (GRPO only, SFT + GRPO, and one whose evaluation has not finished).
Nothing runs but the report (and its `python -m mmjax.sweep report W` command)."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from mmjax.sweep import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Scores as the eval job writes them (fractions); expected means in % by hand.
SCORES = {
    "base": {"mathvista": 0.50, "mmstar": 0.63},           # mean (50 + 63) / 2 = 56.50
    "grpo_midhard": {"mathvista": 0.70, "mmstar": 0.55},   # mean 62.50
    "sft_mid__grpo_hard": {"mathvista": 0.65, "mmstar": 0.625},  # mean 63.75
}


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def _metrics(run_dir, steps, cut=False):
    text = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, steps + 1))
    _write(os.path.join(run_dir, "metrics.jsonl"), text + ('{"step": 99' if cut else ""))


@pytest.fixture
def sweep_dir(tmp_path):
    runs = tmp_path / "runs"
    for row, scores in SCORES.items():
        results = {"model": row, "temperature": 0.0,
                   "benchmarks": {b: {"score": s, "n": 100, "metric": "accuracy", "format": "mc"}
                                  for b, s in scores.items()}}
        _write(str(runs / f"eval_{row}" / "eval" / "results.json"), results)
    # grpo_midhard: 2679 rows, 7 steps (a line cut short by a crash at the end is ignored)
    _write(str(runs / "grpo_midhard" / "selection.json"), {"selected": 2679, "total": 27133, "source_rows": []})
    _metrics(str(runs / "grpo_midhard"), 7, cut=True)
    # sft_mid (1061 rows, 5 steps) then sft_mid__grpo_hard (1618 rows, 3 steps)
    _write(str(runs / "sft_mid" / "selection.json"), {"selected": 1061, "total": 27133})
    _metrics(str(runs / "sft_mid"), 5)
    _write(str(runs / "sft_mid__grpo_hard" / "selection.json"), {"selected": 1618, "total": 27133})
    _metrics(str(runs / "sft_mid__grpo_hard"), 3)
    # grpo_full: trained (no selection report: size unknown), evaluation still running
    _metrics(str(runs / "grpo_full"), 4)
    os.makedirs(runs / "eval_grpo_full" / "eval")
    return str(tmp_path)


def test_table(sweep_dir):
    out = report.write(sweep_dir)
    assert [r["name"] for r in out["rows"]] == ["base", "grpo_full", "grpo_midhard", "sft_mid__grpo_hard"]
    assert out["benchmarks"] == ["mathvista", "mmstar"] and out["columns"] == ["mathvista", "mmstar", "mean"]
    rows = {r["name"]: r for r in out["rows"]}
    assert rows["base"]["scores"] == {"mathvista": 50.0, "mmstar": 63.0, "mean": 56.5}
    assert rows["grpo_midhard"]["scores"]["mean"] == 62.5
    assert rows["sft_mid__grpo_hard"]["scores"] == {"mathvista": 65.0, "mmstar": 62.5, "mean": 63.75}
    assert rows["grpo_full"]["status"] == "pending" and rows["base"]["status"] == "done"
    assert out["best"] == {"mathvista": ["grpo_midhard"], "mmstar": ["base"], "mean": ["sft_mid__grpo_hard"]}
    assert rows["base"]["best"] == {"mathvista": False, "mmstar": True, "mean": False}
    assert rows["base"]["stages"] == []
    assert rows["grpo_midhard"]["stages"] == [{"stage": "grpo", "run": "grpo_midhard", "rows": 2679, "steps": 7}]
    assert rows["sft_mid__grpo_hard"]["stages"] == [
        {"stage": "sft", "run": "sft_mid", "rows": 1061, "steps": 5},
        {"stage": "grpo", "run": "sft_mid__grpo_hard", "rows": 1618, "steps": 3}]
    assert rows["grpo_full"]["stages"] == [{"stage": "grpo", "run": "grpo_full", "rows": None, "steps": 4}]
    assert out["published"] is None

    assert json.load(open(os.path.join(sweep_dir, "paradigms.json"))) == json.loads(json.dumps(out))
    md = open(os.path.join(sweep_dir, "paradigms.md")).read().splitlines()
    table = [line for line in md if line.startswith("| ")][1:]
    assert [line.split(" | ")[1] for line in table] == ["base", "grpo_full", "grpo_midhard", "sft_mid__grpo_hard"]
    assert table[0] == "| base model | base | 50.00 | **63.00** | 56.50 | - | - | - | - |"
    assert table[1] == "| GRPO(full) | grpo_full | pending | pending | pending | - | - | - | 4 |"
    assert table[2] == "| GRPO(midhard) | grpo_midhard | **70.00** | 55.00 | 62.50 | - | - | 2679 | 7 |"
    assert table[3] == "| SFT(mid) + GRPO(hard) | sft_mid__grpo_hard | 65.00 | 62.50 | **63.75** | 1061 | 5 | 1618 | 3 |"
    with Image.open(os.path.join(sweep_dir, "paradigms.png")) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_rebuild_as_evals_finish(sweep_dir):
    report.write(sweep_dir)
    _write(os.path.join(sweep_dir, "runs", "eval_grpo_full", "eval", "results.json"),
           {"benchmarks": {"mathvista": {"score": 0.9, "n": 10, "metric": "accuracy", "format": "mc"},
                           "mmstar": {"score": 0.1, "n": 10, "metric": "accuracy", "format": "mc"}}})
    out = report.write(sweep_dir)
    full = out["rows"][1]
    assert full["status"] == "done" and full["scores"] == {"mathvista": 90.0, "mmstar": 10.0, "mean": 50.0}
    assert out["best"]["mathvista"] == ["grpo_full"]


def test_rows_whose_stage_failed_are_listed_as_failed(sweep_dir):
    runs = os.path.join(sweep_dir, "runs")
    # sft_hard failed (a level the scoring left empty): its two rows never got a folder of their own.
    _write(os.path.join(runs, "sft_hard", "sweep_state.json"), {"state": "failed", "rc": 2, "command": []})
    # grpo_full's eval failed; sft_rand_m finished, its rows are not started: not listed.
    _write(os.path.join(runs, "eval_grpo_full", "sweep_state.json"), {"state": "failed", "rc": 1, "command": []})
    _write(os.path.join(runs, "sft_rand_m", "sweep_state.json"), {"state": "done", "rc": 0, "command": []})
    out = report.write(sweep_dir)
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == ["base", "grpo_full", "grpo_midhard", "sft_mid__grpo_hard", "sft_hard__grpo_mid",
                          "sft_hard__grpo_hard"]
    assert [(rows[n]["status"], rows[n].get("failed_run")) for n in ("grpo_full", "sft_hard__grpo_mid")] == [
        ("failed", "eval_grpo_full"), ("failed", "sft_hard")]
    assert set(rows["sft_hard__grpo_hard"]["scores"].values()) == {None}
    md = open(os.path.join(sweep_dir, "paradigms.md")).read()
    assert "| GRPO(full) | grpo_full | failed (eval_grpo_full) | failed (eval_grpo_full) | failed " in md
    assert "| SFT(hard) + GRPO(hard) | sft_hard__grpo_hard | failed (sft_hard) | failed (sft_hard) | " in md


def test_published_reference_rows(sweep_dir):
    out = report.write(sweep_dir, published="pism_vrt")
    ref = out["published"]
    assert ref["table"] == "pism_vrt"
    names = [r["name"] for r in ref["rows"]]
    assert names == ["paper: grpo_full", "paper: grpo_midhard"]
    midhard = ref["rows"][1]
    assert midhard["scores"] == {"mathvista": 68.3, "mmstar": 63.9, "mean": 66.1}
    assert midhard["all"]["mmmu"] == 54.7
    # our rows untouched; the paper's 68.3 / 63.9 / 66.1 beat none of ours in the marks
    assert [r["name"] for r in out["rows"]] == ["base", "grpo_full", "grpo_midhard", "sft_mid__grpo_hard"]
    assert not any(n.startswith("paper") for names_ in out["best"].values() for n in names_)
    assert out["best"]["mmstar"] == ["base"]  # the paper's 63.9 beats our 63.0 but does not count
    md = open(os.path.join(sweep_dir, "paradigms.md")).read()
    assert "## Reference: the paper's published numbers, table pism_vrt (SPEC 2.4, %)" in md
    assert "| paper: grpo_midhard | 68.30 | 63.90 | 66.10 |" in md
    assert "**68.30**" not in md
    with Image.open(os.path.join(sweep_dir, "paradigms.png")) as im:
        assert im.format == "PNG"
    # a table SPEC gives no numbers for: an empty registry, said so
    out = report.write(sweep_dir, published="pism_vpt")
    assert out["published"]["rows"] == []
    assert "SPEC lists no numbers for pism_vpt." in open(os.path.join(sweep_dir, "paradigms.md")).read()
    with pytest.raises(report.ReportError, match="not one of"):
        report.build(sweep_dir, published="nope")


def test_empty_sweep(tmp_path):
    out = report.write(str(tmp_path))
    assert [r["name"] for r in out["rows"]] == ["base"] and out["rows"][0]["status"] == "pending"
    assert out["columns"] == ["mean"]
    with Image.open(tmp_path / "paradigms.png") as im:
        assert im.format == "PNG"


def test_cli_subcommand(sweep_dir):
    done = subprocess.run([sys.executable, "-m", "mmjax.sweep", "report", sweep_dir, "--published", "pism_vrt"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "paper: grpo_midhard" in done.stdout and "(3 of 4 rows evaluated)" in done.stdout
    for name in report.FILES:
        assert os.path.exists(os.path.join(sweep_dir, name))
    bad = subprocess.run([sys.executable, "-m", "mmjax.sweep", "report", sweep_dir, "--published", "nope"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
