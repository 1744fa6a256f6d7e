"""tools/bench/grpo_step.py's reward functions and helpers (its --quick run is in test_bench_quick.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
sys.path.insert(0, str(BENCH))

import grpo_step  # noqa: E402
import trl_reference  # noqa: E402


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
