"""mmjax.rl.padding: the share of a step's decode and update slots that are padding, by hand."""

import numpy as np
import pytest

from mmjax.rl.padding import padding_metrics, per_call


def test_padding_of_three_calls_by_hand():
    calls = [
        (np.array([2, 5, 3, 5]), 8),  # 15 real tokens; decodes 5 steps x 4 rows = 20 slots; limit not reached
        (np.array([8, 1, 1, 1]), 8),  # 11 real; 8 x 4 = 32 slots, run to the limit by the one row of 8
        (np.array([8, 8, 2, 2]), 8),  # 20 real; 32 slots, at the limit, but two rows needed it
    ]
    got = padding_metrics(calls)
    # 46 real tokens of 20 + 32 + 32 = 84 decoded slots, and of 3 x 32 = 96 update slots.
    assert got["completions/padding_fraction"] == pytest.approx(38 / 84)
    assert got["completions/update_padding_fraction"] == pytest.approx(50 / 96)
    assert got["completions/limit_by_one_row"] == pytest.approx(1 / 3)
    assert padding_metrics([(np.array([3, 3]), 3)]) == {
        "completions/padding_fraction": 0.0, "completions/update_padding_fraction": 0.0,
        "completions/limit_by_one_row": 0.0}


@pytest.mark.parametrize("calls,message", [
    ([], "at least one sampler call"),
    ([(np.array([0, 2]), 4)], r"in \[1, 4\]"),
    ([(np.array([5]), 4)], r"in \[1, 4\]"),
])
def test_impossible_lengths_are_refused(calls, message):
    with pytest.raises(ValueError, match=message):
        padding_metrics(calls)


def test_calls_join_each_micro_batch_across_processes():
    """The gathered lengths are process-major ([p0: mb0, mb1][p1: mb0, mb1]); call m is every process's mb m."""
    gathered = np.array([1, 2, 3, 4,   # process 0: micro-batch 0 (1, 2), micro-batch 1 (3, 4)
                         5, 6, 6, 1])  # process 1: micro-batch 0 (5, 6), micro-batch 1 (6, 1)
    got = per_call(gathered, rows=2, widths=[6, 6])
    assert [(c.tolist(), w) for c, w in got] == [([1, 2, 5, 6], 6), ([3, 4, 6, 1], 6)]
    # Call 0 runs to the limit (6) for one row, call 1 too: both count.
    assert padding_metrics(got)["completions/limit_by_one_row"] == 1.0
