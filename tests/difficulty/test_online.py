"""Online difficulty (issue 23 sections 1, 2, 5): the state's estimators against hand-computed
rollouts, the band and weighted policies, checkpoint round trips and resumes, several processes.

numpy only: no JAX, no compiles.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from mmjax.difficulty import online_policy as policy
from mmjax.difficulty import online_state as online
from mmjax.difficulty.online_state import OnlineConfig

G = 4


def group(solved: int, g: int = G, miss: float = 0.0) -> list[float]:
    """g rewards, the first `solved` of them 1.0 and the rest `miss`."""
    return [1.0] * solved + [miss] * (g - solved)


def same_state(a: online.OnlineState, b: online.OnlineState) -> bool:
    return online.to_dict(a) == online.to_dict(b)


def run_steps(config, state, steps, *, count, candidates=None, seed=7):
    """Draw, score by a fixed per-row pass rate (rewards seeded by (row, step)) and update, `steps` times."""
    true_rate = np.linspace(0.0, 1.0, state.num_rows)
    drawn = []
    for step in steps:
        rows, _ = policy.draw(state, config, seed=seed, step=step, count=count, candidates=candidates)
        rewards = np.concatenate([np.random.default_rng([row, step]).random(G) < true_rate[row] for row in rows])
        state = online.update(state, rows, rewards.astype(np.float64), G, step, config)
        drawn.append(rows.tolist())
    return state, drawn


# ---- the estimators, by hand ------------------------------------------------------------------

def test_ema_follows_a_hand_computed_sequence():
    config = OnlineConfig(estimator="ema", ema_decay=0.5)
    state = online.init(3, config)
    # Row 0's groups pass 1/4, 3/4, 4/4. 1.2 (jigsaw's exact permutation) solves; 0.99 and 0.4 do not.
    stream = [[1.2, 0.4, 0.99, 0.0], [1.0, 1.0, 1.2, 0.2], [1.0, 1.0, 1.0, 1.0]]
    expected = [0.25, 0.5 * 0.25 + 0.5 * 0.75, 0.5 * 0.5 + 0.5 * 1.0]  # 0.25, 0.5, 0.75
    for step, (rewards, want) in enumerate(zip(stream, expected)):
        state = online.update(state, [0], rewards, G, step, config)
        assert state.pass_rate[0] == want
    assert state.pass_rate[0] == 0.75
    assert (state.trials[0], state.successes[0], state.last_step[0]) == (12.0, 8.0, 2)
    assert np.isnan(state.pass_rate[1:]).all() and (state.last_step[1:] == -1).all()


@pytest.mark.parametrize("forget,expected", [
    (1.0, [(1 + 1) / (2 + 4), (1 + 4) / (2 + 8), (1 + 8) / (2 + 12)]),            # 1/3, 1/2, 9/14
    # S, N: (1, 4) -> (0.5 + 3, 2 + 4) = (3.5, 6) -> (1.75 + 4, 3 + 4) = (5.75, 7)
    (0.5, [(1 + 1) / (2 + 4), (1 + 3.5) / (2 + 6), (1 + 5.75) / (2 + 7)]),        # 1/3, 0.5625, 0.75
])
def test_beta_posterior_follows_a_hand_computed_sequence(forget, expected):
    config = OnlineConfig(estimator="beta", beta_prior=(1.0, 1.0), beta_forget=forget)
    state = online.init(2, config)
    for step, (solved, want) in enumerate(zip([1, 3, 4], expected)):
        state = online.update(state, [1], group(solved), G, step, config)
        assert state.pass_rate[1] == pytest.approx(want, abs=1e-15)
    assert np.isnan(state.pass_rate[0])


def test_repeated_rows_in_one_update_apply_in_order():
    config = OnlineConfig(estimator="ema", ema_decay=0.5)
    state = online.update(online.init(1, config), [0], group(4), G, 0, config)            # p = 1
    in_order = online.update(state, [0, 0], group(0) + group(4), G, 1, config)           # 1 -> 0.5 -> 0.75
    reversed_ = online.update(state, [0, 0], group(4) + group(0), G, 1, config)          # 1 -> 1 -> 0.5
    assert (in_order.pass_rate[0], reversed_.pass_rate[0]) == (0.75, 0.5)
    assert in_order.trials[0] == 12.0


def test_update_checks_its_inputs():
    config = OnlineConfig()
    state = online.init(3, config)
    with pytest.raises(ValueError, match="expected 8"):
        online.update(state, [0, 1], group(1), G, 0, config)
    with pytest.raises(ValueError, match=r"rows \[3\] are outside"):
        online.update(state, [3], group(1), G, 0, config)
    with pytest.raises(ValueError, match="finite"):
        online.update(state, [0], [1.0, math.nan, 0.0, 0.0], G, 0, config)
    with pytest.raises(ValueError, match="step=-1"):
        online.update(state, [0], group(1), G, -1, config)


# ---- seeds and levels ---------------------------------------------------------------------------

@pytest.mark.parametrize("p,level", [
    (0.0, "unsolved"), (0.066, "unsolved"), (0.07, "hard"), (0.4, "hard"), (2 / 5, "hard"), (0.41, "medium"),
    (0.7, "medium"), (0.5 * 0.4 + 0.5 * 1.0, "medium"), (0.71, "easy"), (1.0, "easy"), (math.nan, "unseen"),
])
def test_levels_use_pism_thresholds_on_the_pass_rate(p, level):
    config = OnlineConfig()
    assert (config.hard_max, config.medium_max) == (0.4, 0.7)  # pism.PismLevels(), SPEC 2.1
    assert config.unsolved_below == pytest.approx(0.0670, abs=1e-4)
    state = online.init(1, config, seed_pass_rates=[p])
    assert online.levels(state, config).tolist() == [level]


@pytest.mark.parametrize("estimator", ["ema", "beta"])
def test_seeds_give_their_levels_back_and_pass_rates_win(estimator):
    config = OnlineConfig(estimator=estimator)
    names = ["unsolved", "hard", "medium", "easy", ""]
    state = online.init(5, config, seed_levels=names)
    assert online.levels(state, config).tolist() == names[:4] + ["unseen"]
    assert online.level_counts(state, config) == {"unsolved": 1, "easy": 1, "medium": 1, "hard": 1, "unseen": 1}
    measured = online.init(3, config, seed_pass_rates=[0.3, math.nan, math.nan], seed_levels=["easy", "hard", ""])
    if estimator == "ema":
        assert measured.pass_rate[0] == 0.3 and measured.pass_rate[1] == pytest.approx((0.067 + 0.4) / 2, abs=1e-3)
        assert online.update(measured, [0], group(2), G, 0, config).pass_rate[0] == pytest.approx(0.4)
    else:  # 3 of 10 pseudo-rollouts under Jeffreys' prior, then 2 of 4 more
        assert measured.pass_rate[0] == pytest.approx(3.5 / 11)
        assert online.update(measured, [0], group(2), G, 0, config).pass_rate[0] == pytest.approx(5.5 / 15)
    assert (measured.trials.tolist(), np.isnan(measured.pass_rate[2])) == ([10.0, 10.0, 0.0], True)
    with pytest.raises(ValueError, match=r"\['mid'\] are not levels"):
        online.init(1, config, seed_levels=["mid"])


def test_seeds_from_score_records():
    records = [
        {"id": "a", "source_row": 2, "ratios": [0.0, 0.1], "passes": [7, 0], "attempts": 10, "pism_level": "hard"},
        {"id": "b", "source_row": 0, "ratios": [0.0, 0.1], "passes": [0, -1], "attempts": 10,
         "pism_level": "unsolved"},
        {"id": "c", "source_row": 3, "ratios": np.zeros(0), "passes": None, "attempts": 10, "pism_level": ""},
    ]
    rates, names = online.seeds_from_records(records, 4)
    assert rates[[0, 2]].tolist() == [0.0, 0.7] and np.isnan(rates[[1, 3]]).all()
    assert names.tolist() == ["unsolved", "", "hard", ""]
    with pytest.raises(ValueError, match="source_row 2"):
        online.seeds_from_records(records + [records[0]], 4)


# ---- band --------------------------------------------------------------------------------------

def test_band_retires_exactly_when_the_estimate_leaves_the_band():
    config = OnlineConfig(policy="band", estimator="ema", ema_decay=0.5, band_lo=0.25, band_hi=0.75)
    state = online.init(2, config)
    script = [  # (solved of 4, estimate, retired, retired_total, retried_total, returned_total)
        (2, 0.5, False, 0, 0, 0),
        (4, 0.75, False, 0, 0, 0),        # on the edge: still inside
        (4, 0.875, True, 1, 0, 0),        # leaves the band: retired
        (0, 0.4375, False, 1, 1, 1),      # drawn while retired (a re-try), back inside: returned
        (0, 0.21875, True, 2, 1, 1),      # leaves below
        (0, 0.109375, True, 2, 2, 1),     # re-tried, still outside: stays retired, not re-counted
    ]
    for step, (solved, p, retired, *totals) in enumerate(script):
        state = online.update(state, [0], group(solved), G, step, config)
        assert (state.pass_rate[0], bool(state.retired[0])) == (p, retired), step
        assert [state.retired_total, state.retried_total, state.returned_total] == totals, step
    assert not state.retired[1]  # never seen: never retired
    static = OnlineConfig(policy="static")
    assert not online.update(online.init(1, static), [0], group(4), G, 0, static).retired.any()


def band_state(num_retired: int, num_active: int, p_retry: float):
    config = OnlineConfig(policy="band", retry_probability=p_retry)
    state = online.init(num_retired + num_active, config)
    state.retired[:num_retired] = True
    return config, state


def test_band_never_redraws_with_p0_and_always_with_p1():
    config, state = band_state(10, 50, 0.0)
    for step in range(200):
        rows, info = policy.draw(state, config, seed=1, step=step, count=20)
        assert rows.min() >= 10 and info["retried"] == 0 and info["retired"] == 10
    for p, retried, refilled in ((0.0, 0, 10), (1.0, 10, 0)):
        config, state = band_state(10, 50, p)
        for step in range(20):
            rows, info = policy.draw(state, config, seed=1, step=step, count=60)
            assert sorted(rows.tolist()) == list(range(60))
            assert (info["retried"], info["refilled"]) == (retried, refilled)


def test_band_retries_at_the_configured_rate():
    config, state = band_state(20, 5, 0.3)
    draws, total = 500, 0
    for step in range(draws):
        rows, info = policy.draw(state, config, seed=3, step=step, count=25)
        assert info["retried"] + info["refilled"] == 20
        total += info["retried"]
    trials = draws * 20  # every retired row's coin, each draw: Binomial(10000, 0.3)
    assert stats.binomtest(total, trials, 0.3).pvalue > 1e-3
    assert abs(total - 0.3 * trials) < 4 * math.sqrt(trials * 0.3 * 0.7)


def test_band_draws_only_the_pool_when_it_is_big_enough():
    config, state = band_state(30, 30, 0.3)
    for step in range(100):
        rows, info = policy.draw(state, config, seed=5, step=step, count=10)
        assert info["refilled"] == 0 and len(set(rows.tolist())) == 10
        assert info["retried"] == int((rows < 30).sum())


# ---- weighted ----------------------------------------------------------------------------------

def weighted_state():
    config = OnlineConfig(policy="weighted", min_weight=0.02)
    rates = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, math.nan]  # the last is unseen: weighted at the prior mean 0.5
    return config, online.init(len(rates), config, seed_pass_rates=rates)


def test_weighted_draws_match_the_weights():
    config, state = weighted_state()
    p = np.array([0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 0.5])
    weights = np.maximum(p * (1 - p), 0.02)  # 0.02, 0.09, 0.1875, 0.25, 0.09, 0.02, 0.25
    draws = 6000  # the rarest row (weight 0.02 of 0.9075) still expects 132 hits
    hits = np.zeros(len(p))
    for step in range(draws):
        rows, _ = policy.draw(state, config, seed=11, step=step, count=1)
        hits[rows[0]] += 1
    expected = draws * weights / weights.sum()
    assert stats.chisquare(hits, expected).pvalue > 1e-3
    assert stats.chisquare(hits, np.full(len(p), draws / len(p))).pvalue < 1e-12  # uniform is rejected


def test_weighted_candidates_limit_the_draw_and_std_weights():
    config, state = weighted_state()
    for step in range(200):
        rows, info = policy.draw(state, config, seed=2, step=step, count=3, candidates=[5, 3, 0, 6])
        assert set(rows.tolist()) <= {0, 3, 5, 6} and len(set(rows.tolist())) == 3
    assert sum(info["levels"].values()) == 4
    std = OnlineConfig(policy="weighted", weight="std", min_weight=0.1)
    assert policy.row_weights(np.array([0.0, 0.5, 0.99]), std).tolist() == [0.1, 0.5, 0.1]


@pytest.mark.parametrize("name", ["band", "weighted"])
def test_draws_depend_on_seed_step_part_and_state_only(name):
    config = OnlineConfig(policy=name, retry_probability=0.5)
    state = online.init(50, config, seed_pass_rates=np.linspace(0.0, 1.0, 50))
    state.retired[::3] = True

    def rows(state=state, seed=4, step=9, part=0):
        return policy.draw(state, config, seed=seed, step=step, count=10, part=part)[0].tolist()

    first = rows()
    assert rows(state.copy()) == first
    assert all(rows(step=s) != first for s in (10, 11)) and rows(seed=5) != first
    assert rows(part=1) != first and rows(part=2) != rows(part=1)  # a step's refill draws differ
    moved = state.copy()
    moved.pass_rate[:25], moved.retired[:] = 0.5, False
    assert rows(moved) != first
    np.random.seed(0)  # numpy's global generator plays no part
    assert rows() == first


def test_static_keeps_the_candidates_order():
    config = OnlineConfig()
    state = online.init(10, config)
    rows, info = policy.draw(state, config, seed=0, step=3, count=3, candidates=[7, 2, 9, 4])
    assert rows.tolist() == [7, 2, 9] and info["retried"] == 0
    with pytest.raises(ValueError, match="count=5 rows asked of 4"):
        policy.draw(state, config, seed=0, step=3, count=5, candidates=[7, 2, 9, 4])
    with pytest.raises(ValueError, match="repeat"):
        policy.draw(state, config, seed=0, step=3, count=1, candidates=[7, 7])


def test_online_metrics_name_the_issue_metrics():
    config, state = band_state(2, 4, 1.0)
    state = online.update(state, [3], group(2), G, 0, config)
    rows, info = policy.draw(state, config, seed=0, step=1, count=6)
    metrics = policy.online_metrics(state, config, info)
    assert metrics["online/levels/medium"] == 1 and metrics["online/levels/unseen"] == 5
    assert {"online/levels/easy", "online/levels/hard", "online/levels/unsolved", "online/retired",
            "online/retried", "online/mean_pass_rate_drawn", "online/retired_total"} <= set(metrics)
    assert metrics["online/retired"] == 2 and metrics["online/retried"] == 2
    assert metrics["online/mean_pass_rate_drawn"] == 0.5  # unseen rows at the prior mean, row 3 at 2/4


# ---- checkpoints and resume ------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["ema", "beta"])
def test_to_dict_round_trips_exactly_through_json(estimator):
    config = OnlineConfig(policy="band", estimator=estimator, beta_forget=0.9)
    state, _ = run_steps(config, online.init(12, config, seed_pass_rates=[0.3] + [math.nan] * 11), range(6),
                         count=5)
    back = online.from_dict(json.loads(json.dumps(online.to_dict(state))))
    for name in ("pass_rate", "trials", "successes", "last_step", "retired"):
        a, b = getattr(state, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    assert same_state(state, back) and back.retired_total == state.retired_total
    with pytest.raises(ValueError, match="version"):
        online.from_dict({**online.to_dict(state), "version": 99})
    with pytest.raises(ValueError, match="trials"):
        online.from_dict({**online.to_dict(state), "trials": [0.0]})


@pytest.mark.parametrize("name", ["band", "weighted"])
def test_a_resumed_run_draws_what_an_unbroken_one_draws(name):
    config = OnlineConfig(policy=name, estimator="beta", beta_forget=0.8)
    candidates = np.arange(3, 30)
    unbroken, drawn = run_steps(config, online.init(30, config), range(12), count=6, candidates=candidates)
    first, drawn_a = run_steps(config, online.init(30, config), range(6), count=6, candidates=candidates)
    resumed = online.from_dict(json.loads(json.dumps(online.to_dict(first))))
    last, drawn_b = run_steps(config, resumed, range(6, 12), count=6, candidates=candidates)
    assert drawn_a + drawn_b == drawn
    assert same_state(last, unbroken)


# ---- several processes ---------------------------------------------------------------------------

def test_two_processes_reach_the_state_of_one():
    config = OnlineConfig(policy="band", estimator="ema")
    state = online.init(8, config)
    rows = np.array([0, 1, 2, 5, 5, 6, 7, 1])  # row 1 drawn by both processes, row 5 twice by process 1
    rewards = np.concatenate([group(s) for s in (4, 0, 2, 1, 3, 4, 0, 2)])
    one = online.update(state, rows, rewards, G, 3, config)
    parts = [(rows[:4], rewards[:4 * G]), (rows[4:], rewards[4 * G:])]
    on_process = [online.merge_updates(state, parts, G, 3, config) for _ in range(2)]  # each applies the same list
    assert all(same_state(s, one) for s in on_process)
    with pytest.raises(ValueError, match="process 1's update"):
        online.merge_updates(state, [parts[0], (rows[4:], rewards[:G])], G, 3, config)


def test_two_processes_over_steps_match_one():
    config = OnlineConfig(policy="weighted", estimator="beta")
    true_rate = np.linspace(0.0, 1.0, 16)

    def rewards_of(rows, step):
        return np.concatenate([np.random.default_rng([r, step]).random(G) < true_rate[r] for r in rows]) * 1.0

    single, split = online.init(16, config), online.init(16, config)
    for step in range(8):
        rows, _ = policy.draw(single, config, seed=9, step=step, count=6)
        single = online.update(single, rows, rewards_of(rows, step), G, step, config)
        global_rows, _ = policy.draw(split, config, seed=9, step=step, count=6)
        parts = [(global_rows[p * 3:(p + 1) * 3], rewards_of(global_rows[p * 3:(p + 1) * 3], step)) for p in (0, 1)]
        split = online.merge_updates(split, parts, G, step, config)
        assert same_state(single, split), step


# ---- config ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("policy", "greedy"), ("estimator", "kalman"), ("ema_decay", 1.0), ("ema_decay", -0.1), ("beta_prior", (0, 1)),
    ("beta_prior", (1.0,)), ("beta_forget", 0.0), ("solved_threshold", math.nan), ("band_lo", 0.8),
    ("band_hi", 1.5), ("retry_probability", 1.2), ("weight", "entropy"), ("min_weight", 0.0), ("seed_trials", 0),
    ("unsolved_below", 0.0), ("hard_max", 0.8), ("medium_max", 1.0),
])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}="):
        OnlineConfig(**{field: value})


def test_config_fields_say_where_they_come_from():
    import dataclasses
    for field in dataclasses.fields(OnlineConfig):
        assert field.metadata.get("help"), field.name
    assert OnlineConfig(beta_prior=[1, 3]).beta_prior == (1.0, 3.0)
    assert OnlineConfig().prior_mean == 0.5


def test_the_module_example_holds():
    config = OnlineConfig(policy="band", estimator="beta")
    state = online.init(12, config)
    state = online.update(state, rows=[4, 9], rewards=[1, 0, 0, 1, 0, 0, 0, 0], num_generations=4, step=0,
                          config=config)
    assert state.pass_rate[[4, 9]].tolist() == [0.5, 0.1]
    assert online.level_counts(state, config) == {"unsolved": 0, "easy": 0, "medium": 1, "hard": 1, "unseen": 10}
    assert state.retired.tolist() == [i == 9 for i in range(12)]
