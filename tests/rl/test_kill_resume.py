"""Stop the GRPO job, rerun it: the final params equal those of a run that was never
interrupted, bit for bit (CPU). SIGKILL at random moments (saves included) loses the steps
since the last checkpoint; SIGTERM (a scheduler's preemption notice) loses none: the step in
flight is finished and saved, and the job exits 75. Two runs: the demo with online selection,
and the tiny image jigsaw with adaptive difficulty, LoRA adapters and the packed update."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mmjax.train import checkpoints
from mmjax.train.preemption import PREEMPTED_EXIT_CODE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 8
ARGS = ["--config", "configs/demo.py", "--config.mode=grpo", f"--config.max_steps={STEPS}",
        "--config.save_steps=1", "--config.data.batch_size=4", "--config.grpo.num_generations=4",
        # Online selection over 8 rows (an epoch every 2 steps): rows retire and are passed over, and
        # the records and the online state must resume together.
        "--config.data.online.policy=band", "--config.data.num_samples=8"]


# The adaptive jigsaw run (tests/rl/jigsaw_kill_config.py): the level (3x3 -> 2x3 -> 2x2), the
# LoRA adapters and their optimiser state, and the packed update's layout resume together.
JIGSAW_ARGS = ["--config", "tests/rl/jigsaw_kill_config.py"]
JIGSAW_STEPS = 6


def _command(workdir, args=ARGS):
    return [sys.executable, "-m", "mmjax.main", *args, "--workdir", str(workdir)]


def _logged_steps(workdir) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for line in f if line.strip().endswith("}"))


def _run_and_kill(workdir, after_steps: int, extra_delay: float, args=ARGS) -> bool:
    """Start the job, SIGKILL it once `after_steps` steps are logged (+ a delay); True if killed."""
    proc = subprocess.Popen(_command(workdir, args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def _final_params(workdir, steps=STEPS):
    state = checkpoints.restore_latest(str(workdir))
    assert state is not None and state.step == steps
    return state.params


def _bytes_equal(reference, resumed, export: str) -> None:
    files = [sorted((w / export).glob("*")) for w in (reference, resumed)]
    assert files[0] and [p.name for p in files[0]] == [p.name for p in files[1]]
    for a, b in zip(*files):
        assert a.read_bytes() == b.read_bytes(), a.name  # the exported model, bit for bit


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_command(workdir), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _same_run(reference, resumed) -> None:
    for a, b in zip(jax.tree.leaves(_final_params(reference)), jax.tree.leaves(_final_params(resumed))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = [json.loads(line) for line in open(resumed / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # each step logged once
    reference_rows = [json.loads(line) for line in open(reference / "metrics.jsonl")]
    assert [r["reward"] for r in rows] == [r["reward"] for r in reference_rows]
    online = [k for k in reference_rows[0] if k.startswith("online/")]
    assert [[r[k] for k in online] for r in rows] == [[r[k] for k in online] for r in reference_rows]
    assert reference_rows[-1]["online/retired_total"] > 0 and sum(r["online/passed_over"] for r in reference_rows)
    _bytes_equal(reference, resumed, "hf_export")


def _saved_steps(workdir) -> set[int]:
    steps = checkpoints.checkpoint_dir(str(workdir))
    return {int(n) for n in os.listdir(steps) if n.isdigit()} if os.path.isdir(steps) else set()


def _stop_with_sigterm(workdir, after_steps: int) -> int:
    """Start the job with checkpoints only at its end, SIGTERM it once `after_steps` steps are
    logged: it saves the step in flight and exits 75. Returns the step it stopped after."""
    command = _command(workdir) + ["--config.save_steps=1000"]  # whatever it saves now is the preemption's
    saved_before = _saved_steps(workdir)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _logged_steps(workdir) < after_steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    assert "SIGTERM received" in stderr and "rerun the same command to resume" in stderr
    stopped = _logged_steps(workdir)
    assert after_steps <= stopped < STEPS  # nothing logged was lost: the last logged step is the saved one
    new = _saved_steps(workdir) - saved_before  # the preemption's save, of the step it stopped after; and, when
    # the SIGKILL came before any save finished, the first step (Orbax saves a run's first step if none exists)
    assert new == {stopped} or (not saved_before and len(new) == 2 and stopped in new), (saved_before, new)
    assert max(_saved_steps(workdir)) == stopped
    assert not (workdir / "hf_export").exists()  # a stopped run exports nothing yet
    return stopped


@pytest.mark.slow  # GRPO jobs from the CLI, killed, stopped and rerun
def test_sigkill_and_sigterm_then_resume_give_identical_params(tmp_path, reference):
    """A SIGKILL at a random moment (mid-step or mid-save) loses the steps since the last
    checkpoint; then, in the resumed run, SIGTERM (a scheduler's preemption notice) loses none:
    the step in flight is finished and saved, and the job exits 75. The rerun equals the
    uninterrupted run."""
    interrupted = tmp_path / "interrupted"
    rng = random.Random(0)
    assert _run_and_kill(interrupted, rng.choice(range(1, STEPS - 4)), rng.uniform(0.0, 0.15))  # room for 2 more
    _stop_with_sigterm(interrupted, min(_logged_steps(interrupted) + 2, STEPS - 2))
    proc = subprocess.run(_command(interrupted), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_run(reference, interrupted)


@pytest.mark.slow  # three tiny jigsaw GRPO jobs from the CLI
def test_sigkill_then_resume_an_adaptive_jigsaw_lora_packed_run(tmp_path):
    """A SIGKILL at a random moment of an adaptive-jigsaw LoRA run: the rerun draws the same
    levels, trains the same adapters (the frozen base untouched) and exports the same files."""
    reference = tmp_path / "reference"
    proc = subprocess.run(_command(reference, JIGSAW_ARGS), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    interrupted = tmp_path / "interrupted"
    rng = random.Random(1)
    assert _run_and_kill(interrupted, rng.choice([1, 2, 3]), rng.uniform(0.0, 0.15), JIGSAW_ARGS)
    assert 0 < _logged_steps(interrupted) < JIGSAW_STEPS
    proc = subprocess.run(_command(interrupted, JIGSAW_ARGS), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    final = [_final_params(w, JIGSAW_STEPS) for w in (reference, interrupted)]
    names = {jax.tree_util.keystr(path[-1:]) for path, _ in jax.tree_util.tree_leaves_with_path(final[0])}
    assert names == {"['kernel_lora_a']", "['kernel_lora_b']"}  # the checkpoint holds the adapters only
    for a, b in zip(jax.tree.leaves(final[0]), jax.tree.leaves(final[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    timing = ("step_time", "tokens_per_second", "perf/compiles")
    untimed = [[{k: v for k, v in json.loads(line).items() if k not in timing and not k.startswith("perf/")}
                for line in open(w / "metrics.jsonl")] for w in (reference, interrupted)]
    assert [r["step"] for r in untimed[1]] == list(range(1, JIGSAW_STEPS + 1))
    assert untimed[1] == untimed[0]
    levels = [r["jigsaw/jigsaw_image/difficulty"] for r in untimed[0]]
    assert levels[0] == 6.0 and levels[-1] == 4.0  # the grid moved: 3x3 drawn first, 2x2 by the end
    assert all(r["update/packed_micro_batches"] > 0 for r in untimed[0])
    assert any(r["grad_norm"] > 0 for r in untimed[0])  # the length reward gives real gradients
    _bytes_equal(reference, interrupted, "hf_export")  # merged policy
    _bytes_equal(reference, interrupted, "peft_adapter")
