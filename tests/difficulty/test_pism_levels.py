"""PISM lambda* and levels from hand-built survival curves (SPEC 2.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmjax.data.masking import DEFAULT_RATIOS
from mmjax.difficulty import pism

R = DEFAULT_RATIOS  # 0.0, 0.1, ..., 0.9 (0.7 is 0.7000000000000001 when computed as 0.1 * 7)


def curve(fail_at: list[float]) -> list[int]:
    """passes per ratio: 0 at the ratios in fail_at, 3 elsewhere."""
    return [0 if any(abs(r - f) < 1e-9 for f in fail_at) else 3 for r in R]


@pytest.mark.parametrize("fail_at,lam,level", [
    ([0.0], 0.0, "unsolved"),
    ([0.0, 0.1, 0.2], 0.0, "unsolved"),            # fails everything
    ([0.1], 0.1, "hard"),
    ([0.4], 0.4, "hard"),                          # hard includes 0.4
    ([0.5], 0.5, "medium"),
    ([0.6], 0.6, "medium"),
    ([0.7], 0.7, "medium"),                        # the table's choice (default)
    ([0.8], 0.8, "easy"),
    ([0.9], 0.9, "easy"),
    ([], math.nan, "easy"),                        # never fails
])
def test_levels_follow_spec_2_1(fail_at, lam, level):
    ls, levels = pism.levels(R, [curve(fail_at)])
    if math.isnan(lam):
        assert math.isnan(ls[0])
    else:
        assert ls[0] == pytest.approx(lam)
    assert levels.tolist() == [level]
    assert pism.level(R, curve(fail_at)) == level


def test_non_monotone_curves_use_the_first_failure():
    # Fails at 0.3, survives 0.4..0.9 again: lambda* = 0.3 (hard), whatever comes after.
    recovers = [5, 4, 2, 0, 1, 3, 2, 1, 1, 1]
    # Fails at 0.6 only, survives 0.7: medium, not easy.
    dip = [10, 9, 9, 8, 7, 6, 0, 2, 1, 0]
    # Survives 0 with one pass, fails nowhere though passes wobble: easy.
    wobbly = [1, 1, 3, 1, 2, 1, 1, 1, 2, 1]
    ls, levels = pism.levels(R, [recovers, dip, wobbly])
    np.testing.assert_allclose(ls[:2], [0.3, 0.6])
    assert math.isnan(ls[2])
    assert levels.tolist() == ["hard", "medium", "easy"]


def test_the_text_puts_0_7_in_easy():
    seven = curve([0.7])
    assert pism.level(R, seven, pism.PRESETS["table"]) == "medium"
    assert pism.level(R, seven, pism.PRESETS["text"]) == "easy"
    assert pism.level(R, curve([0.6]), pism.PRESETS["text"]) == "medium"
    # 0.7 computed as 0.1 * 7 (0.7000000000000001) is still 0.7 for the thresholds.
    ratios = [0.1 * i for i in range(10)]
    assert pism.level(ratios, seven, pism.PismLevels(medium_max=0.7)) == "medium"


def test_thresholds_are_config():
    c = pism.PismLevels(hard_max=0.2, medium_max=0.5)
    ls, levels = pism.levels(R, [curve([0.2]), curve([0.3]), curve([0.5]), curve([0.6])], c)
    assert levels.tolist() == ["hard", "medium", "medium", "easy"]
    with pytest.raises(ValueError, match="hard_max <= medium_max"):
        pism.PismLevels(hard_max=0.6, medium_max=0.5)


def test_early_stopped_curves_and_bad_curves():
    stopped = [4, 2, 0, pism.NOT_RUN, pism.NOT_RUN, -1, -1, -1, -1, -1]
    unsolved = [0] + [pism.NOT_RUN] * 9
    ls, levels = pism.levels(R, [stopped, unsolved])
    np.testing.assert_allclose(ls, [0.2, 0.0])
    assert levels.tolist() == ["hard", "unsolved"]
    with pytest.raises(ValueError, match="only the ratios after the first failure"):
        pism.lambda_stars(R, [[3, -1, 0, 1, 1, 1, 1, 1, 1, 1]])  # not scored before any failure
    with pytest.raises(ValueError, match="only the ratios after the first failure"):
        pism.lambda_stars(R, [[3] * 9 + [-1]])                   # never failed, yet stopped
    with pytest.raises(ValueError, match="start with 0"):
        pism.levels([0.1, 0.2], [[1, 0]])
    with pytest.raises(ValueError, match="ascending"):
        pism.levels([0.0, 0.5, 0.3], [[1, 0, 1]])
    with pytest.raises(ValueError, match="2 ratios per curve but there are 10"):
        pism.levels(R, [[1, 0]])


def test_short_ratio_lists():
    ls, levels = pism.levels((0.0, 0.5), [[2, 0], [2, 1], [0, 2]])
    assert levels.tolist() == ["medium", "easy", "unsolved"]
    assert ls[0] == 0.5 and math.isnan(ls[1]) and ls[2] == 0.0
