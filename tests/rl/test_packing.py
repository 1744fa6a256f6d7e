"""mmjax.rl.packing (issue 24, host side): every token lands in exactly one packed slot, rows hold
one prompt's completions, segments number them, and unpacking inverts packing."""

import numpy as np
import pytest

from mmjax.rl import packing


def test_a_hand_packed_prompt():
    # One prompt, G = 4, width 8: lengths 5, 3, 8, 2 -> longest first: [8], [5, 3], then 2 fits
    # nowhere (rooms 0 and 0) -> a third row; R = 3 is a bucket.
    p = packing.pack([5, 3, 8, 2], num_generations=4, width=8)
    assert p.rows_per_prompt == 3
    assert p.row.tolist() == [[2] * 8, [0] * 5 + [1] * 3, [3, 3] + [-1] * 6]
    assert p.segment.tolist()[1] == [1] * 5 + [2] * 3
    assert p.position.tolist()[1] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert p.slot[1].tolist() == [13, 14, 15, -1, -1, -1, -1, -1]  # completion 1: row 1, slots 5..7
    assert p.fill == 18 / 24
    assert [packing.row_bucket(n, 8) for n in range(1, 9)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert packing.row_bucket(5, 5) == 5  # never more rows than completions


def test_pooled_rows_by_hand():
    # Two prompts, G = 4, width 8. Prompt 0 as above: 3 rows; prompt 1 (1, 2, 1, 3 = 7 tokens): 1 row.
    # Per prompt, both get the bucket of the most (3): 6 rows. Pooled: 3 + 1 = 4 rows (a bucket), and
    # with rows split over 3 shards a process, 6.
    lengths = [5, 3, 8, 2, 1, 2, 1, 3]
    assert packing.pack(lengths, 4, 8).row.shape == (6, 8)
    p = packing.pack(lengths, 4, 8, pooled=True)
    assert p.pooled and p.rows_per_prompt == 4 and p.prompt.tolist() == [0, 0, 0, 1]
    assert p.row.tolist()[3] == [7, 7, 7, 5, 5, 4, 6, -1]  # longest first: 3, 2, then the ones
    assert p.slot[4].tolist() == [29] + [-1] * 7  # completion 4 (prompt 1's first): row 3, slot 5
    three = packing.pack(lengths, 4, 8, pooled=True, multiple=3)
    assert three.prompt.tolist() == [0, 0, 0, 1, 0, 0] and (three.row[4:] == -1).all()  # empty rows attend prompt 0
    assert packing.pack(lengths, 4, 8, pooled=True, rows_per_prompt=5).row.shape[0] == 5  # another process's count
    # Three prompts of 3 rows each: 9 rows pooled would round up to 10; the per-prompt layout's 9 are fewer.
    assert packing.pack([8, 8, 8] * 3, 3, 8, pooled=True).row.shape[0] == 9
    assert [packing.row_bucket(n, 256) for n in (9, 13, 65, 100, 129, 200)] == [10, 14, 80, 112, 160, 224]
    assert packing.row_bucket(5, 8, multiple=4) == 8 and packing.row_bucket(3, 32, multiple=4) == 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_packing_round_trips_ragged_lengths(seed):
    rng = np.random.default_rng(seed)
    b, g, tc = 3, 8, 32
    lengths = np.clip(rng.geometric(1 / (0.3 * tc), size=b * g), 1, tc)  # long-tailed, mean ~0.3 Tc
    lengths[0], lengths[1] = 1, tc  # a row of length 1 and one at the maximum
    tokens = rng.integers(1, 100, size=(b * g, tc))
    mask = np.arange(tc)[None] < lengths[:, None]
    for pooled in (False, True):
        p = packing.pack(lengths, g, tc, pooled=pooled)
        flat = p.row[p.row >= 0]
        assert sorted(np.bincount(flat, minlength=b * g).tolist()) == sorted(lengths.tolist())  # every token once
        rows_prompt = np.where(p.row >= 0, p.row // g, -1)
        for r in range(p.row.shape[0]):  # a packed row holds the completions of the prompt it attends
            assert set(rows_prompt[r][rows_prompt[r] >= 0].tolist()) <= {p.prompt[r]}
        back = packing.unpacked(packing.packed(tokens, p, fill=-7), p, fill=0)
        np.testing.assert_array_equal(back, np.where(mask, tokens, 0))
        assert p.row.shape[0] <= b * g
    per_prompt = packing.pack(lengths, g, tc)
    assert per_prompt.rows_per_prompt == packing.row_bucket(per_prompt.rows_per_prompt, g)
    assert p.row.shape[0] <= per_prompt.row.shape[0]  # pooling never needs more rows


def test_positions_three_d_are_packed_too_and_errors_name_the_bounds():
    lengths = [2, 1]
    pos = np.arange(2 * 3 * 3).reshape(2, 3, 3)  # [N, Tc, 3]: M-RoPE positions moved last
    p = packing.pack(lengths, 2, 3)
    assert packing.packed(pos, p).shape == (1, 3, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 3\]"):
        packing.pack([0, 2], 2, 3)
    with pytest.raises(ValueError, match="3 completions are not prompts x 2"):
        packing.pack([1, 1, 1], 2, 3)


def test_length_sorted_chunks_and_width_buckets_by_hand():
    lengths = np.array([5, 1, 9, 3, 40, 2, 2, 7])  # 2 prompts x 4
    short, long = packing.length_sorted_chunks(lengths, 4, 2)
    np.testing.assert_array_equal(short, [1, 3, 5, 6])  # per prompt the two shortest, stable on ties
    np.testing.assert_array_equal(long, [0, 2, 7, 4])
    assert [packing.width_bucket(int(lengths[c].max()), 64) for c in (short, long)] == [16, 64]
    assert packing.width_bucket(17, 24) == 24 and packing.width_bucket(1, 8) == 8
    with pytest.raises(ValueError, match="3 chunks"):
        packing.length_sorted_chunks(lengths, 4, 3)
