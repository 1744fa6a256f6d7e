"""SIGKILL the GRPO job at random moments (saves included), rerun it: the final params equal
those of a run that was never interrupted, bit for bit (CPU)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from mmjax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8
ARGS = ["--config", "configs/demo.py", "--config.mode=grpo", f"--config.max_steps={STEPS}",
        "--config.save_steps=1", "--config.data.batch_size=4", "--config.grpo.num_generations=4"]


def _command(workdir):
    return [sys.executable, "-m", "mmjax.main", *ARGS, "--workdir", str(workdir)]


def _logged_steps(workdir) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip().endswith("}"))


def _run_and_kill(workdir, after_steps: int, extra_delay: float) -> bool:
    """Start the job, SIGKILL it once `after_steps` steps are logged (+ a delay); True if killed."""
    proc = subprocess.Popen(_command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if _logged_steps(workdir) >= after_steps:
            time.sleep(extra_delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read().decode()[-3000:]
    return False


def _final_params(workdir):
    state = checkpoints.restore_latest(str(workdir))
    assert state is not None and state.step == STEPS
    return state.params


def test_sigkill_at_random_moments_then_resume_gives_identical_params(tmp_path):
    reference = tmp_path / "reference"
    proc = subprocess.run(_command(reference), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    rng = random.Random(0)
    kills = 0
    for after in sorted(rng.sample(range(1, STEPS - 1), 2)):  # two kills, mid-step or mid-save
        kills += _run_and_kill(interrupted, after, rng.uniform(0.0, 0.15))
    assert kills == 2
    proc = subprocess.run(_command(interrupted), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    for a, b in zip(jax.tree.leaves(_final_params(reference)), jax.tree.leaves(_final_params(interrupted))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = [json.loads(line) for line in open(interrupted / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # each step logged once
    reference_rows = [json.loads(line) for line in open(reference / "metrics.jsonl")]
    assert [r["reward"] for r in rows] == [r["reward"] for r in reference_rows]
