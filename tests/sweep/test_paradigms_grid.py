"""The paradigm grid end to end through `python -m mmjax.sweep`, on its tiny runs (issue 21 section 6):

  whole    a mini-grid of configs/paradigms.py:pism,vrt,tiny: the score run, GRPO only on mid+hard,
           SFT(mid) then GRPO(mid), both rows' evals, then the report (its base model row pending:
           a base model's scores are tests/sweep/test_paradigms_report.py's)
           (with the paper's pism_vrt numbers beside ours);
  killed   the SFT -> GRPO chain of the same grid in another workdir, whose score and SFT runs are
           `whole`'s finished ones copied in (a sweep skips a run its state file calls done, so
           running them again would only repeat `whole`), the sweep and its job both SIGKILLed (a
           lost machine) once the GRPO run has saved a step, then the same command again: it skips
           what finished, resumes the killed run from its checkpoint and runs the rest. The resumed
           run and its eval equal `whole`'s: every step's metrics, the params, the export, the answers.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mmjax.sweep import state
from mmjax.train import checkpoints
from test_multiprocess import TIMING, _export, _metrics, _params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 4  # every training run; the killed one is stopped after its first
GRID = "configs/paradigms.py:pism,vrt,tiny"
WIDE = (f"--config.max_steps={STEPS}", "--config.save_steps=1")  # sweep-wide: a checkpoint after every step
WHOLE = ("score", "grpo_midhard", "sft_mid", "sft_mid__grpo_mid", "eval_grpo_midhard",
         "eval_sft_mid__grpo_mid")
CHAIN = ("score", "sft_mid", "sft_mid__grpo_mid", "eval_sft_mid__grpo_mid")
KILLED = "sft_mid__grpo_mid"
FINISHED = ("score", "sft_mid")  # the chain's runs before KILLED
DEADLINE_S = 900


def _command(workdir, only, *extra):
    return [sys.executable, "-m", "mmjax.sweep", "--config", GRID, "--workdir", str(workdir),
            "--only", ",".join(only), *WIDE, *extra]


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def _logs(workdir) -> str:
    return "".join(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted((workdir / "runs").glob("*/log.txt")))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (/proc), e.g. the job a sweep started."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _scores(run_dir) -> dict:
    with open(run_dir / "eval" / "results.json") as f:
        return {name: {k: v for k, v in summary.items() if k != "seconds"}
                for name, summary in json.load(f)["benchmarks"].items()}


def _answers(run_dir) -> dict[str, str]:
    """Every answer file of an eval run (workdir/eval/<benchmark>.jsonl), as text."""
    return {p.name: p.read_text() for p in sorted((run_dir / "eval").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid") / "whole"
    proc = subprocess.run(_command(workdir, WHOLE, "--config.report.published=pism_vrt"), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=DEADLINE_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + _logs(workdir)
    return workdir, proc


@pytest.mark.slow  # 6 tiny jobs from the sweep CLI
def test_a_mini_grid_runs_in_order_and_writes_the_report(whole):
    workdir, proc = whole
    runs = workdir / "runs"
    assert all(state.is_done(str(runs / name)) for name in WHOLE), proc.stdout
    assert sorted(p.name for p in runs.iterdir()) == sorted(WHOLE)  # --only: nothing else ran
    lines = proc.stdout.splitlines()
    order = {name: next(i for i, line in enumerate(lines) if f"] {name}: done" in line) for name in WHOLE}
    assert order["score"] < order["grpo_midhard"] < order["eval_grpo_midhard"]
    assert order["score"] < order["sft_mid"] < order["sft_mid__grpo_mid"] < order["eval_sft_mid__grpo_mid"]
    config = {name: json.load(open(runs / name / "config.json")) for name in WHOLE}
    # Each stage starts from the one before: the GRPO stage from the SFT run, each eval from its row.
    assert config["sft_mid__grpo_mid"]["init_from"] == str(runs / "sft_mid")
    assert config["eval_sft_mid__grpo_mid"]["init_from"] == str(runs / "sft_mid__grpo_mid")
    assert config["eval_grpo_midhard"]["init_from"] == str(runs / "grpo_midhard")
    # SPEC 2.4's learning rates, and the sweep-wide overrides reached every training run.
    assert config["grpo_midhard"]["optim"]["learning_rate"] == 5e-7
    assert config["sft_mid__grpo_mid"]["optim"]["learning_rate"] == 1e-6
    for name in ("grpo_midhard", "sft_mid", "sft_mid__grpo_mid"):
        assert [r["step"] for r in _metrics(runs / name)] == list(range(1, STEPS + 1)), name
        assert config[name]["save_steps"] == 1

    # The report: our rows from the evals' own results, in %, the paper's beside them.
    report = json.load(open(workdir / "paradigms.json"))
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["base", "grpo_midhard", "sft_mid__grpo_mid"]
    assert rows.pop("base")["status"] == "pending"  # eval_base is not in this mini-grid: always listed first
    for name, row in rows.items():
        results = _scores(runs / f"eval_{name}")
        assert row["status"] == "done" and set(report["benchmarks"]) == set(results)
        for bench, summary in results.items():
            assert row["scores"][bench] == round(100 * summary["score"], 2), (name, bench)
        columns = [row["scores"][b] for b in report["benchmarks"]]
        assert row["scores"]["mean"] == pytest.approx(sum(columns) / len(columns), abs=0.01)
    assert [(s["stage"], s["run"], s["steps"]) for s in rows["sft_mid__grpo_mid"]["stages"]] == [
        ("sft", "sft_mid", STEPS), ("grpo", "sft_mid__grpo_mid", STEPS)]
    assert [r["name"] for r in report["published"]["rows"]] == ["paper: grpo_full", "paper: grpo_midhard"]
    assert report["published"]["rows"][1]["all"]["mathvista"] == 68.3  # SPEC 2.4, never one of our rows
    markdown = (workdir / "paradigms.md").read_text()
    assert "SFT(mid) + GRPO(mid)" in markdown and "paper: grpo_midhard" in markdown
    assert (workdir / "paradigms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "--published pism_vrt" in proc.stdout  # how to rebuild it


@pytest.mark.slow  # 2 tiny jobs from the sweep CLI, one of them killed and resumed
def test_a_sweep_killed_mid_run_finishes_with_the_results_of_one_never_killed(whole, tmp_path):
    reference = whole[0] / "runs"
    workdir = tmp_path / "killed"
    runs = workdir / "runs"
    for name in FINISHED:
        shutil.copytree(reference / name, runs / name)
    command = _command(workdir, CHAIN)
    sweep = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.monotonic() + DEADLINE_S
    saved = checkpoints.checkpoint_dir(str(runs / KILLED))
    try:
        while not (os.path.isdir(saved) and any(s.isdigit() for s in os.listdir(saved))):
            assert sweep.poll() is None, f"the sweep ended (rc {sweep.returncode}) before {KILLED} saved a step"
            assert time.monotonic() < deadline, "no checkpoint of the GRPO run in time"
            time.sleep(0.05)
        jobs = _children(sweep.pid)
        sweep.send_signal(signal.SIGKILL)  # the sweep first: it must not see its job die
        for pid in jobs:
            os.kill(pid, signal.SIGKILL)
        sweep.wait(timeout=60)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    record = state.read(str(runs / KILLED))
    assert record["state"] == state.RUNNING  # killed before it could record an end
    stopped = len(_metrics(runs / KILLED))
    assert stopped < STEPS, "the GRPO run finished before the kill: nothing was resumed"

    again = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=DEADLINE_S)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:] + _logs(workdir)
    assert "score: already done" in again.stdout and "sft_mid: already done" in again.stdout
    assert all(state.is_done(str(runs / name)) for name in CHAIN)
    log = (runs / KILLED / "log.txt").read_text()
    assert log.count("==== mmjax.sweep") == 2  # started twice; the second resumed, not restarted
    assert f"| {stopped}/{STEPS} [" in log.split("==== mmjax.sweep")[-1], log[-3000:]

    # The resumed run equals the never-killed sweep's: each step, the weights, the export, the scores.
    assert _untimed(_metrics(runs / KILLED)) == _untimed(_metrics(reference / KILLED))
    for a, b in zip(_params(runs / KILLED, STEPS), _params(reference / KILLED, STEPS)):
        np.testing.assert_array_equal(a, b)
    exported = _export(runs / KILLED)
    assert exported and exported == _export(reference / KILLED)
    assert _scores(runs / f"eval_{KILLED}") == _scores(reference / f"eval_{KILLED}")
    answers = _answers(runs / f"eval_{KILLED}")
    assert answers and answers == _answers(reference / f"eval_{KILLED}")  # every answer, token for token
