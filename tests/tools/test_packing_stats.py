"""tools/packing_stats.py (issue 24): the packed update's programs and slots at a given scale, host side."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import packing_stats  # noqa: E402

from mmjax.rl import packing  # noqa: E402


def test_one_token_completions_by_hand():
    # mean 1/width: p = 1, every completion is 1 token. 3 prompts x G=4 in rows of 8: each prompt's 4 tokens
    # fill one row (per prompt: 3 rows), pooled: 3 rows (a bucket); 24 slots for 12 tokens. Padded: 12 x 8 / 12.
    r = packing_stats.simulate(prompts=3, generations=4, width=8, mean=1 / 8, steps=5)
    assert r["padded"]["slots_per_token"] == 8.0
    for layout in ("per_prompt", "pooled"):
        assert r[layout] == {"packed_steps": 1.0, "row_counts": {3: 5}, "programs": 1, "slots_per_token": 2.0}


def test_long_tailed_lengths_against_a_direct_draw():
    r = packing_stats.simulate(prompts=4, generations=8, width=64, mean=0.3, steps=40, seed=3)
    rng = np.random.default_rng(3)
    real = sum(int(np.minimum(rng.geometric(1 / (0.3 * 64), 32), 64).sum()) for _ in range(40))
    assert r["padded"]["slots_per_token"] == 40 * 32 * 64 / real  # the same draws: padded slots / real tokens
    for layout in ("per_prompt", "pooled"):
        assert set(r[layout]["row_counts"]) <= set(packing.ROW_BUCKETS) and r[layout]["programs"] >= 1
        assert 1 < r[layout]["slots_per_token"] < r["padded"]["slots_per_token"]
    assert r["pooled"]["slots_per_token"] <= r["per_prompt"]["slots_per_token"]  # pooling never needs more rows
