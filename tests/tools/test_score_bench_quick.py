"""tools/bench/score.py runs in --quick mode (tiny model, seconds), so that it does not rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a benchmark script in a subprocess
def test_score_bench_quick_compares_the_batched_scorer_with_the_loop():
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "score.py"), "--quick"], capture_output=True,
                         text=True, timeout=240, cwd=ROOT, env=env)
    assert res.returncode == 0, f"exit {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert re.search(r"ratio mmjax / loop: [0-9.]+x \(target >= 10x\)", res.stdout), res.stdout
    out = json.loads(res.stdout.strip().splitlines()[-1])
    mm, loop = out["mmjax"], out["loop"]
    assert mm["samples_per_s"] > 0 and loop["samples_per_s"] > 0 and out["ratio"] > 0
    # 2 samples x ratios (0, 0.5) x K=2: the loop calls the sampler per answer (8 calls); the
    # scorer once for the clean images (2 prompts x K) and once for the 4 masked ones.
    assert loop["sampler_calls"] == 8 and mm["sampler_calls"] == 2
    # Greedy answers to the same masked images: both sides give the same, non-trivial passes.
    assert out["greedy_passes_agree"] == 1.0
    assert mm["passes"] == loop["passes"]
    flat = [p for curve in mm["passes"] for p in curve]
    assert all(0 <= p <= 2 for p in flat) and 0 < sum(flat) < 2 * len(flat)
