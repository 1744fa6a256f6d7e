"""CMAB scores on hand-built masses and the level thresholds at their boundaries (SPEC.md 2.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmjax.difficulty import cmab


def _masses(img, txt, before):
    """[1, T, L, H=2, 3] with the given head-mean masses [T, L] and heads spread +-0.01."""
    m = np.stack([img, txt, before], -1)[None, :, :, None, :]
    return np.concatenate([m - 0.01, m + 0.01], axis=3)


def test_paper_score_by_hand():
    # T=2 tokens, L=4 layers; only layers 2 and 3 (1-based) count.
    img = np.array([[9.0, 0.2, 0.1, 9.0], [9.0, 0.3, 0.3, 9.0]])
    txt = np.array([[1.0, 0.4, 0.4, 1.0], [1.0, 0.6, 0.2, 1.0]])
    rho_1 = math.sqrt(0.5 * 0.25)                 # geometric mean of 0.2/0.4 and 0.1/0.4
    rho_2 = math.sqrt(0.5 * 1.5)
    got = cmab.paper_scores(_masses(img, txt, txt), np.ones((1, 2), bool))
    np.testing.assert_allclose(got, [(rho_1 + rho_2) / 2], rtol=1e-6)
    # A masked (not generated) token does not count.
    got = cmab.paper_scores(_masses(img, txt, txt), np.array([[True, False]]))
    np.testing.assert_allclose(got, [rho_1], rtol=1e-6)


def test_code_score_by_hand():
    # T=3 tokens, L=2 layers; layer 1 is used; token 1 is skipped; 4 image, 2 pre-image positions.
    img = np.array([[0.0, 99.0], [0.0, 0.4], [0.0, 0.8]])
    before = np.array([[0.0, 99.0], [0.0, 0.2], [0.0, 0.1]])
    sizes = np.array([[4.0, 10.0, 2.0]])
    expected = (0.4 / 4 + 0.8 / 4) / (0.2 / 2 + 0.1 / 2)
    got = cmab.code_scores(_masses(img, img, before), np.ones((1, 3), bool), sizes, layer=1)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    np.testing.assert_allclose(cmab.code_scores(_masses(img, img, before), np.ones((1, 3), bool), sizes, -1),
                               [expected], rtol=1e-6)
    with pytest.raises(ValueError, match="layer 20 is outside the model's 2 decoder layers"):
        cmab.code_scores(_masses(img, img, before), np.ones((1, 3), bool), sizes, layer=20)


def test_fixed_levels_at_the_boundaries():
    scores = np.array([0.05, 0.1, 0.39, 0.4, 1.0, 1.6, 1.61, 1.9, 1.95, np.nan, 1.0])
    correct = np.array([True] * 10 + [False])
    got = cmab.fixed_levels(scores, correct, cmab.CmabConfig())
    assert got.tolist() == ["easy", "medium", "medium", "hard", "hard", "hard", "medium", "medium", "easy",
                            cmab.UNSCORED, "unsolved"]


def test_quantile_levels_reproduce_the_target_mix():
    # distances from 1: 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 2.0 (+ one unsolved)
    scores = np.array([1.05, 0.9, 1.2, 0.7, 1.5, 0.3, 1.9, 3.0, 1.0])
    correct = np.array([True] * 8 + [False])
    cfg = cmab.CmabConfig(mode="quantile", target_mix=(2, 2, 4))  # easy, medium, hard
    got = cmab.quantile_levels(scores, correct, cfg)
    assert got.tolist() == ["hard", "hard", "hard", "hard", "medium", "medium", "easy", "easy", "unsolved"]


def test_score_batch_checks_inputs():
    m = _masses(np.full((2, 3), 0.2), np.full((2, 3), 0.4), np.full((2, 3), 0.1))
    sizes = np.array([[0.0, 5.0, 2.0]])
    with pytest.raises(ValueError, match=r"rows \[0\] have none"):
        cmab.score_batch(m, np.ones((1, 2), bool), sizes, [True])
    with pytest.raises(ValueError, match="needs L >= 3"):
        cmab.score_batch(m[:, :, :2], np.ones((1, 2), bool), sizes + [[1, 0, 0]], [True])
    with pytest.raises(ValueError, match="shapes disagree"):
        cmab.score_batch(m, np.ones((1, 3), bool), sizes + [[1, 0, 0]], [True])
    with pytest.raises(ValueError, match="target_mix"):
        cmab.CmabConfig(mode="quantile")
    with pytest.raises(ValueError, match="definition"):
        cmab.CmabConfig(definition="mean")
    ok = cmab.score_batch(m, np.ones((1, 2), bool), sizes + [[1, 0, 0]], [True])
    np.testing.assert_allclose(ok.scores, [0.5], rtol=1e-6)
    assert ok.levels.tolist() == ["hard"]
