"""Two processes x 4 CPU devices, joined by jax.distributed through a local coordinator, run
the GRPO job; one of them is sent SIGTERM mid-run, both stop after the same step (JAX's
preemption service agrees it), save it and exit 75, and the rerun finishes. The result
equals an uninterrupted two-process run bit for bit (params and HF export), and one process
on 8 devices running the same steps up to rounding.

How the two see the same global batches: the pipeline deals one global stream out a batch
at a time (`mmjax.data.pipeline.record_keys`), so process p's batch of B prompts is slots
[p B, (p + 1) B) of the batch of 2 B prompts the single process reads, and the global
arrays lay the processes' rows side by side in process order (`mmjax.sharding.global_rows`).
Sampling keys are per global row, so the completions, rewards and updates are the same
numbers, up to rounding in the cross-process reductions.

The runs, launched as subprocesses of tests/rl/multiprocess_worker.py (mmjax.main with the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID a launcher would set):
  single     1 process, 8 devices, 8 prompts a step, STEPS steps;
  whole      2 processes, 4 prompts each, STEPS steps, never interrupted;
  first      the same 2 processes in another workdir, slowed down, SIGTERM to process 0 only
             once step 1 is logged;
  resumed    the same 2 processes' command again: restores the stop step, runs to STEPS.
Every wait has a deadline; on a failure or a timeout every process still running is killed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mmjax.train import checkpoints
from mmjax.train.preemption import PREEMPTED_EXIT_CODE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "rl", "multiprocess_worker.py")
CONFIG = "tests/rl/multiprocess_config.py"
STEPS, PROMPTS = 4, 8  # PROMPTS: the global batch (the single process's batch_size)
DEADLINE_S = 300  # per wait; the whole test takes about a minute on 2 idle cores
_DISTRIBUTED = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """The processes of one launch of the job; logs in workdir/<name>.<process>.log."""

    def __init__(self, name: str, workdir, num_processes: int, *, env=None, extra=()):
        self.name, self.workdir = name, workdir
        os.makedirs(workdir, exist_ok=True)
        port = _free_port()
        args = [sys.executable, WORKER, "--config", CONFIG, f"--config.max_steps={STEPS}",
                f"--config.data.batch_size={PROMPTS // num_processes}", "--workdir", str(workdir),
                "--config.save_steps=1000", *extra]  # no periodic saves: mid-run checkpoints are the preemption's
        self.logs, self.procs = [], []
        for i in range(num_processes):
            child = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED}
            child.update(env or {}, JAX_PLATFORMS="cpu",
                         XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={8 // num_processes}")
            if num_processes > 1:
                child.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
                             JAX_PROCESS_ID=str(i))
            log = os.path.join(workdir, f"{name}.{i}.log")
            self.logs.append(log)
            with open(log, "w") as out:
                self.procs.append(subprocess.Popen(args, cwd=ROOT, env=child, stdout=out, stderr=subprocess.STDOUT))

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=60)

    def tails(self) -> str:
        out = []
        for log in self.logs:
            with open(log, errors="replace") as f:
                lines = [line for line in f.read().splitlines() if not line.startswith("[Gloo]")]
            out.append(f"--- {log}\n" + "\n".join(lines[-40:]))
        return "\n".join(out)

    def wait(self, until=None, code: int = 0) -> None:
        """Until every process exited with `code` (or, given `until`, until it holds); fails,
        killing them all, on another exit (the others would wait on it forever), on an exit
        before `until` holds, or past the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            codes = [p.poll() for p in self.procs]
            if until() if until is not None else all(c == code for c in codes):
                return
            failed = any(c not in (None, code) for c in codes) or (until is not None and None not in codes)
            if failed or time.monotonic() > deadline:
                self.kill()
                why = f"exit codes {codes}" if failed else f"no result within {DEADLINE_S} s"
                raise AssertionError(f"{self.name}: {why}\n{self.tails()}")
            time.sleep(0.2)


def _metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _params(workdir, step: int) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(
        checkpoints.restore_params(os.path.join(checkpoints.checkpoint_dir(str(workdir)), str(step))))]


TIMING = ("step_time", "tokens_per_second", "perf/compiles")  # differ between runs; all else must not


def _export(workdir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((workdir / "hf_export").glob("*.safetensors"))}


@pytest.mark.slow  # about 2 minutes on 2 cores: four launches of the job, 7 processes
def test_two_processes_stopped_by_sigterm_and_resumed_equal_uninterrupted_runs(tmp_path):
    single_dir, whole_dir, multi_dir = tmp_path / "single", tmp_path / "whole", tmp_path / "multi"
    # Process 0 of a later run reads what process 0 of an earlier one compiled (JAX writes
    # its persistent cache from process 0 only); the numbers are the same either way.
    cache = dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    runs = []
    try:
        single = Run("single", single_dir, 1)
        runs.append(single)
        whole = Run("whole", whole_dir, 2, env=cache)
        runs.append(whole)
        whole.wait()
        first = Run("first", multi_dir, 2, env={**cache, "MMJAX_TEST_SLOW_STEPS": "1.5"})
        runs.append(first)
        first.wait(until=lambda: os.path.exists(multi_dir / "metrics.jsonl") and _metrics(multi_dir))
        first.procs[0].send_signal(signal.SIGTERM)  # one process only: the service tells the other
        first.wait(code=PREEMPTED_EXIT_CODE)
        stopped = len(_metrics(multi_dir))
        assert 1 <= stopped < STEPS, first.tails()
        saved = sorted(int(s) for s in os.listdir(checkpoints.checkpoint_dir(str(multi_dir))))
        assert saved[-1] == stopped, saved  # both processes saved the step they stopped after
        resumed = Run("resumed", multi_dir, 2, env=cache)
        runs.append(resumed)
        resumed.wait()
        single.wait()
    finally:
        for run in runs:
            run.kill()

    with open(resumed.logs[0]) as f:  # the progress bar of the resumed run starts at the stop step
        progress = f.read()
    assert f"| {stopped}/{STEPS} [" in progress and f"| 0/{STEPS} [" not in progress, resumed.tails()

    # The stopped and resumed run is the uninterrupted one, bit for bit.
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    assert untimed(_metrics(multi_dir)) == untimed(_metrics(whole_dir))
    for a, b in zip(_params(multi_dir, STEPS), _params(whole_dir, STEPS)):
        np.testing.assert_array_equal(a, b)
    exported = _export(multi_dir)
    assert exported and exported == _export(whole_dir)

    multi, one = _metrics(multi_dir), _metrics(single_dir)
    assert [r["step"] for r in multi] == [r["step"] for r in one] == list(range(1, STEPS + 1))  # each step logged once
    # The same completions of the same prompts: the rewards are identical, not just close.
    assert [r["reward"] for r in multi] == [r["reward"] for r in one]
    # One global sampler call either way: its decode padding is counted over both processes' rows.
    # The online difficulty state is every process's rows', and the draws are counted over both.
    online = [k for k in one[0] if k.startswith("online/")]
    assert "online/levels/medium" in online and "online/drawn" in online
    for key in ("completions/padding_fraction", "completions/update_padding_fraction", "completions/limit_by_one_row",
                *online):
        assert [r[key] for r in multi] == [r[key] for r in one], key
    # The loss cancels to ~1e-8 (zero-mean advantages at ratio 1): a mean of O(1) float32 terms summed in
    # another order (each process packs its own rows) moves it by ~1e-7, hence atol 1e-6.
    for key in ("loss", "grad_norm", "entropy", "num_tokens"):
        np.testing.assert_allclose([r[key] for r in multi], [r[key] for r in one], rtol=1e-4, atol=1e-6,
                                   err_msg=key)

    got, want, start = _params(multi_dir, STEPS), _params(single_dir, STEPS), _params(single_dir, 1)
    moved = max(float(np.abs(w - s).max()) for w, s in zip(want, start))
    diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    assert moved > 1e-4, moved  # the params really move over steps 2 and 3
    assert diff <= 1e-3 * moved, (diff, moved)  # measured ~5e-6 x moved: rounding, not different data

    step_dir = os.path.join(checkpoints.checkpoint_dir(str(multi_dir)), str(STEPS))
    with open(os.path.join(step_dir, checkpoints.DATA_STATE, "metadata")) as f:
        data_state = json.load(f)
    assert len(data_state[checkpoints.PER_PROCESS]) == 2  # each process's own iterator state
    for i in range(2):  # fsdp spans both processes: each wrote its own half of the params
        written = os.path.join(step_dir, checkpoints.PARAMS, f"ocdbt.process_{i}")
        assert os.path.isdir(written) and os.listdir(written), os.listdir(os.path.join(step_dir, "params"))

