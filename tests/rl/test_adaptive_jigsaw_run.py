"""Adaptive jigsaw in the GRPO job (issue 23 section 3): the grid moves through three levels,
each level compiles once (its own prompt and vision shapes) and never again. (A SIGKILLed adaptive
run resumes bit for bit, its level included: tests/rl/test_kill_resume.py.)"""

import importlib
import json

import jax
import pytest

from mmjax.jobs import grpo as grpo_job

STEPS = 4


def _config(steps: int = STEPS):
    c = importlib.import_module("configs.jigsaw_image").get_config(f"tiny,steps={steps}")
    c.save_steps = 1
    c.data.image_size = (112, 112)  # 28 px a tile up to 4x4
    a = c.data.adaptive
    # The tiny random model solves nothing: a rate of 0 is below target_lo after every step, so
    # the grid steps down each step until the ladder's bottom, 3x3 -> 2x3 -> 2x2.
    a.enabled, a.min_groups, a.target_lo, a.target_hi = True, 1, 0.5, 0.9
    return c


def _metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


@pytest.mark.slow  # a GRPO run of the jigsaw recipe (tiny)
def test_levels_compile_once_each(tmp_path):
    jax.clear_caches()  # the counts below are this run's own, whatever ran before in this worker
    unbroken = tmp_path / "unbroken"
    grpo_job.build_trainer(_config(), str(unbroken)).train()
    rows = _metrics(unbroken)
    pieces = [r["jigsaw/jigsaw_image/difficulty"] for r in rows]
    # A step's metrics show the level after its rollouts moved it: step 1 drew 3x3 puzzles.
    assert pieces == [6.0, 4.0, 4.0, 4.0] and rows[-1]["jigsaw/jigsaw_image/moves"] == 2
    compiles = [r["perf/compiles"] for r in rows]
    # Step 1 builds every program; steps 2 and 3 meet a new level's prompt (2x3, then 2x2): a few
    # programs each (encode, prefill, decode, grads at the new shapes), then none.
    assert compiles[0] > 10 and all(0 < c <= 5 for c in compiles[1:3]) and compiles[3] == 0, compiles
