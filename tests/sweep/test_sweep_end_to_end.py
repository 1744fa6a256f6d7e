"""A real sweep through the CLI: two tiny demo runs, the second starting from the first's weights
(`init_from="{first}"`), then the same command again, which finds both done."""

import json
import os
import subprocess
import sys

import pytest

from mmjax.sweep import state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SWEEP = """from mmjax.sweep import Run

TINY = {"max_steps": 2, "save_steps": 2, "data.batch_size": 2, "data.num_samples": 64,
        "grpo.num_generations": 2, "eval.num_batches": 1}


def get_sweep(arg=None):
    return [Run("first", TINY, config="configs/demo.py"),
            Run("second", {**TINY, "init_from": "{first}"}, config="configs/demo.py")]
"""


@pytest.mark.slow  # two demo jobs (compile, 2 GRPO steps, eval, export) from the CLI
def test_a_two_run_sweep_over_the_demo_runs_in_order_and_a_rerun_skips_it(tmp_path):
    (tmp_path / "sweep.py").write_text(SWEEP)
    workdir = tmp_path / "w"
    command = [sys.executable, "-m", "mmjax.sweep", "--config", str(tmp_path / "sweep.py"), "--workdir", str(workdir)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def sweep():
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)

    proc = sweep()
    logs = "".join(open(p).read()[-3000:] for p in (workdir / "runs").glob("*/log.txt"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs
    runs = {name: workdir / "runs" / name for name in ("first", "second")}
    assert all(state.is_done(str(d)) for d in runs.values())
    assert "[1/2] first: done" in proc.stdout and "[2/2] second: done" in proc.stdout
    assert json.load(open(runs["second"] / "config.json"))["init_from"] == str(runs["first"])
    assert json.load(open(runs["first"] / "config.json"))["max_steps"] == 2

    again = sweep()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[1/2] first: already done" in again.stdout and "[2/2] second: already done" in again.stdout
    assert all(open(d / "log.txt").read().count("==== mmjax.sweep") == 1 for d in runs.values())  # not started again
