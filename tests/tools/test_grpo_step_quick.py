"""tools/bench/grpo_step.py runs in --quick mode (mmjax side only, seconds), so that it does not rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
sys.path.insert(0, str(BENCH))

import grpo_step  # noqa: E402
import trl_reference  # noqa: E402


@pytest.mark.slow  # a benchmark script in a subprocess
def test_grpo_step_quick_prints_the_step_time():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    # --no-trl: the test never depends on TRL's venv, even where it exists.
    res = subprocess.run([sys.executable, str(BENCH / "grpo_step.py"), "--quick", "--no-trl"], capture_output=True,
                         text=True, timeout=240, cwd=ROOT, env=env)
    assert res.returncode == 0, f"exit {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = res.stdout
    step = re.search(r"mmjax Trainer \(GRPO\): step median ([0-9.]+) ms \(rollout ([0-9.]+) ms, update ([0-9.]+) ms\)", out)
    assert step, f"no step time line in:\n{out}"
    assert all(float(x) > 0 for x in step.groups())
    assert re.search(r"update model FLOP/s: .* = [0-9.]+ GFLOP/s", out), out
    assert "TRL GRPOTrainer" not in out and "ratio TRL / mmjax" not in out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["trl"] is None and res["ratio"] is None
    mm = res["mmjax"]
    # Fixed-length completions (EOS never sampled): every step's rows are all 16 tokens.
    assert mm["completion_length"] == [16.0, 16.0]
    # The update's token count: 4 prompts x 4 completions x 16 tokens at the head; each 112 px
    # image (8 x 8 patches, 16 merged tokens) counted once per prompt, not once per completion.
    assert mm["tokens"]["head_tokens"] == 4 * 4 * 16
    assert mm["tokens"]["patches"] == 4 * 64 and mm["tokens"]["merged"] == 4 * 16
    assert mm["flops_6nd"] > 0 and res["update_flops_per_s"] > 0


def test_rewards_read_both_sides_completions():
    # mmjax passes decoded strings and targets; TRL conversational messages and the answer column.
    assert trl_reference.colour_reward(["It is Red.", "blue"], ["red", "green"]) == [1.0, 0.0]
    trl_style = [[{"role": "assistant", "content": "green, I think"}]]
    assert trl_reference.colour_reward(trl_style, answer=["green"]) == [1.0]
    assert trl_reference.length_reward(["one two three", "one"]) == [0.0, -0.2]


def test_trl_thread_counts():
    cores = len(os.sched_getaffinity(0))
    assert grpo_step.trl_thread_counts("1,all") == ([1] if cores == 1 else [1, cores])
    assert grpo_step.trl_thread_counts("2,2") == [2]
