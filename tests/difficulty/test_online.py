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


def proposals(num_rows: int, seed: int = 7):
    """(epoch, index) as the pipeline proposes records: every row once an epoch, shuffled per epoch."""
    epoch = 0
    while True:
        for index in np.random.default_rng([seed, epoch]).permutation(num_rows):
            yield epoch, int(index)
        epoch += 1


def draw(state, config, keys, count: int, seed: int = 7) -> list[int]:
    """The next `count` rows the policy accepts from the proposals `keys`."""
    rows = []
    while len(rows) < count:
        epoch, index = next(keys)
        if policy.accepts(state, config, seed=seed, epoch=epoch, index=index):
            rows.append(index)
    return rows


def run_steps(config, state, steps, *, count, keys=None, seed=7):
    """Draw, score by a fixed per-row pass rate (rewards seeded by (row, step)) and update, `steps` times."""
    true_rate = np.linspace(0.0, 1.0, state.num_rows)
    keys = keys if keys is not None else proposals(state.num_rows, seed)
    drawn = []
    for step in steps:
        rows = draw(state, config, keys, count, seed)
        rewards = np.concatenate([np.random.default_rng([row, step]).random(G) < true_rate[row] for row in rows])
        state = online.update(state, rows, rewards.astype(np.float64), G, step, config)
        drawn.append(rows)
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
    assert policy.accept_probability(state, config, range(60)).tolist() == [0.0] * 10 + [1.0] * 50
    rows = draw(state, config, proposals(60), 500)
    assert min(rows) >= 10 and len(set(rows)) == 50  # every active row, no retired one
    config, state = band_state(10, 50, 1.0)
    assert sorted(draw(state, config, proposals(60), 60)) == list(range(60))  # the first epoch, whole


def test_band_retries_at_the_configured_rate():
    config, state = band_state(20, 5, 0.3)
    keys, epochs = proposals(25, seed=3), 500
    taken = sum(policy.accepts(state, config, seed=3, epoch=e, index=i) for e, i in (next(keys) for _ in
                                                                                     range(25 * epochs)) if i < 20)
    trials = epochs * 20  # every retired row's coin, each epoch: Binomial(10000, 0.3)
    assert stats.binomtest(taken, trials, 0.3).pvalue > 1e-3
    assert abs(taken - 0.3 * trials) < 4 * math.sqrt(trials * 0.3 * 0.7)


# ---- weighted ----------------------------------------------------------------------------------

def weighted_state():
    config = OnlineConfig(policy="weighted", min_weight=0.02)
    rates = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, math.nan]  # the last is unseen: weighted at the prior mean 0.5
    return config, online.init(len(rates), config, seed_pass_rates=rates)


def test_weighted_draws_match_the_weights():
    config, state = weighted_state()
    p = np.array([0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 0.5])
    weights = np.maximum(p * (1 - p), 0.02)  # 0.02, 0.09, 0.1875, 0.25, 0.09, 0.02, 0.25
    np.testing.assert_allclose(policy.accept_probability(state, config, range(7)), weights / 0.25)
    draws = 6000  # the rarest row (weight 0.02 of 0.9075) still expects 132 hits
    hits = np.bincount(draw(state, config, proposals(7, seed=11), draws, seed=11), minlength=len(p))
    expected = draws * weights / weights.sum()
    assert stats.chisquare(hits, expected).pvalue > 1e-3
    assert stats.chisquare(hits, np.full(len(p), draws / len(p))).pvalue < 1e-12  # uniform is rejected
    std = OnlineConfig(policy="weighted", weight="std", min_weight=0.1)
    assert policy.row_weights(np.array([0.0, 0.5, 0.99]), std).tolist() == [0.1, 0.5, 0.1]


@pytest.mark.parametrize("name", ["band", "weighted"])
def test_decisions_depend_on_seed_epoch_index_and_state_only(name):
    config = OnlineConfig(policy=name, retry_probability=0.5)
    state = online.init(50, config, seed_pass_rates=np.linspace(0.0, 1.0, 50))
    state.retired[::3] = True

    def taken(state=state, seed=4, epoch=9):
        return [policy.accepts(state, config, seed=seed, epoch=epoch, index=i) for i in range(50)]

    first = taken()
    assert 0 < sum(first) < 50 and taken(state.copy()) == first
    assert taken(epoch=10) != first and taken(seed=5) != first
    moved = state.copy()
    moved.pass_rate[:], moved.retired[:] = 0.5, False
    assert all(taken(moved))  # nothing retired, every row at the largest weight
    np.random.seed(0)  # numpy's global generator plays no part
    assert taken() == first
    assert policy.coin(4, 9, 3) == policy.coin(4, 9, 3) != policy.coin(4, 9, 4)


def test_static_accepts_every_record():
    config = OnlineConfig()
    state = online.init(10, config, seed_pass_rates=[1.0] * 10)
    assert all(policy.accepts(state, config, seed=0, epoch=e, index=i) for e in range(3) for i in range(10))


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
    unbroken, drawn = run_steps(config, online.init(30, config), range(12), count=6)
    keys = proposals(30)  # the pipeline's own position resumes with its iterator state
    first, drawn_a = run_steps(config, online.init(30, config), range(6), count=6, keys=keys)
    resumed = online.from_dict(json.loads(json.dumps(online.to_dict(first))))
    last, drawn_b = run_steps(config, resumed, range(6, 12), count=6, keys=keys)
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
    keys_single, keys_split = proposals(16), proposals(16)
    for step in range(8):
        rows = draw(single, config, keys_single, 6)
        single = online.update(single, rows, rewards_of(rows, step), G, step, config)
        global_rows = draw(split, config, keys_split, 6)
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
