"""Online difficulty: each training row's estimated pass rate, kept up to date from its rollouts.

GRPO samples G completions per prompt, so every step measures each drawn row's pass rate
for free: solved = reward >= `solved_threshold`. This module keeps, for every row of the
training set, the running estimate, the evidence behind it and whether the `band` policy
has retired it. It is host-side numpy only (no JAX): `mmjax.difficulty.online_policy` draws
rows from it, the trainer updates it after each step and checkpoints `to_dict(state)`.

Estimators (`OnlineConfig.estimator`), per update of a row with s of G rollouts solved:
  ema   p <- decay * p + (1 - decay) * s / G; the first evidence sets p = s / G.
  beta  S <- forget * S + s, N <- forget * N + G; p = (a + S) / (a + b + N), the mean of the
        Beta(a + S, b + N - S) posterior of a Beta(a, b) prior (forget = 1: exact counts;
        forget < 1 discounts old rollouts, so the estimate tracks a policy that moves).
A row with no evidence has p = NaN (level "unseen"); the policies treat it as the prior
mean a / (a + b) (`estimates`).

Levels (`levels`): the repo's levels (SPEC 2) are PISM's, on lambda*, and CMAB's, on an
attention score; only "unsolved" is a pass rate there (pass@K = 0 at mask ratio 0). Online
there is only the pass rate, so mmjax levels it with PISM's numbers (`pism.PismLevels`:
hard <= 0.4 < medium <= 0.7 < easy) and calls a row unsolved below `unsolved_below`,
1 - 0.5 ** (1 / 10) ~ 0.067: the rate below which SPEC 2.1's test (no pass in K = 10
attempts) calls a row unsolved more often than not.

Several processes: `merge_updates` (every process applies the all-gathered updates in
process order, so all reach the same state).

    config = OnlineConfig(policy="band", estimator="beta")
    state = init(12, config)
    state = update(state, rows=[4, 9], rewards=[1, 0, 0, 1, 0, 0, 0, 0], num_generations=4, step=0,
                   config=config)
    state.pass_rate[[4, 9]]       # [0.5, 0.1]: (1/2 + 2) / (1 + 4) and (1/2 + 0) / (1 + 4)
    level_counts(state, config)   # {'unsolved': 0, 'easy': 0, 'medium': 1, 'hard': 1, 'unseen': 10}
    state.retired[9]              # True: 0.1 is below band_lo 0.25
    json.dumps(to_dict(state))    # the checkpoint's copy; from_dict reads it back exactly
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.config_help import choice_errors, help_text
from mmjax.difficulty import pism

POLICIES = ("static", "band", "weighted")
ESTIMATORS = ("ema", "beta")
WEIGHTS = ("variance", "std")
LEVELS = pism.LEVELS  # unsolved, easy, medium, hard (SPEC 2)
UNSEEN = "unseen"  # a row with no evidence yet (neither a seed nor a rollout)
COUNTED_LEVELS = LEVELS + (UNSEEN,)
STATE_VERSION = 1
# SPEC 2.1 calls a row unsolved when none of K = 10 attempts passes: more likely than not below this rate.
MEDIAN_UNSOLVED_RATE = 1.0 - 0.5 ** (1.0 / 10)
_EPS = 1e-9  # estimates like 0.7 are sums of binary fractions: compare with PISM's slack


def _field(default: Any, text: str, choices=None):
    return dataclasses.field(default=default, metadata=help_text(text, choices=choices))


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """How rows' pass rates are estimated online and how the next rows are drawn (`config.data.online`)."""

    policy: str = _field("static", "static (the pipeline's own order, today's behaviour) | band (retire rows whose "
                                   "estimate leaves [band_lo, band_hi]; balanced online filtering, arXiv 2504.03380)"
                                   " | weighted (draw with weight w(p)); issue 23", POLICIES)
    estimator: str = _field("ema", "ema (moving average of each group's pass rate, ema_decay) | beta (Beta "
                                   "posterior mean (a + successes) / (a + b + trials), beta_prior, beta_forget); "
                                   "mmjax", ESTIMATORS)
    ema_decay: float = _field(0.5, "ema: p <- decay * p + (1 - decay) * (solved / G); weight of the old estimate, "
                                   "in [0, 1); 0.5 halves a past group's weight at each new one (mmjax)")
    beta_prior: tuple[float, float] = _field((0.5, 0.5), "beta: prior (a, b), both > 0; default Jeffreys' prior "
                                                         "Beta(1/2, 1/2); its mean a / (a + b) is every "
                                                         "estimator's guess for a row with no evidence (mmjax)")
    beta_forget: float = _field(1.0, "beta: successes and trials are multiplied by this before each new group, "
                                     "in (0, 1]; 1 = the exact posterior, < 1 forgets old rollouts so the "
                                     "estimate tracks a moving policy (mmjax)")
    solved_threshold: float = _field(1.0, "a rollout solves its row when reward >= this; 1.0 = a correct answer "
                                          "of SPEC 2.3's 0/1 accuracy reward, and the exact permutation of "
                                          "SPEC 1.5's tiered jigsaw reward (total 1.2; partial credit <= 0.4)")
    band_lo: float = _field(0.25, "band: retire a seen row whose estimate falls below this; arXiv 2504.03380 "
                                  "keeps intermediate pass rates (p(1-p) lower-bounds the improvement); "
                                  "[0.25, 0.75] keeps p(1-p) >= 3/4 of its maximum (mmjax)")
    band_hi: float = _field(0.75, "band: retire a seen row whose estimate rises above this (see band_lo)")
    retry_probability: float = _field(0.1, "band: each draw, each retired row rejoins the pool with this "
                                           "probability, so a row that became hard again can come back "
                                           "(issue 23; 0.1 is mmjax's)")
    weight: str = _field("variance", "weighted: w(p) = p(1-p) (variance: the Bernoulli reward's variance; a group "
                                     "gives GRPO a gradient only when its rewards vary) | std: sqrt(p(1-p)); "
                                     "issue 23", WEIGHTS)
    min_weight: float = _field(0.01, "weighted: floor of w(p), > 0, so rows estimated at 0 or 1 can still be "
                                     "drawn and re-measured (mmjax)")
    solved_reward: str = _field("", "'' = a rollout solves its row when the total reward >= solved_threshold; a "
                                    "reward function's name (e.g. accuracy, jigsaw_exact) judges by that function's "
                                    "value alone, so a format bonus does not count as solving (mmjax)")
    seed_from_scores: bool = _field(False, "seed each row from the selection's score file: its pass rate at mask "
                                           "ratio 0 (passes / attempts), else its PISM level (`level_pass_rates`); "
                                           "issue 23")
    seed_trials: float = _field(10.0, "rollouts a seed counts as (the beta posterior's pseudo-counts); SPEC 2.1 "
                                      "scores K = 10 attempts at ratio 0")
    unsolved_below: float = _field(MEDIAN_UNSOLVED_RATE, "level unsolved below this estimate: 1 - 0.5^(1/10), "
                                                         "where SPEC 2.1's no-pass-in-10 test says unsolved half "
                                                         "the time (mmjax)")
    hard_max: float = _field(pism.PismLevels().hard_max, "level hard up to this estimate (PISM's 0.4, SPEC 2.1, "
                                                         "read as a pass rate)")
    medium_max: float = _field(pism.PismLevels().medium_max, "level medium up to this, easy above (PISM's 0.7, "
                                                             "SPEC 2.1, read as a pass rate)")

    def __post_init__(self):
        object.__setattr__(self, "beta_prior", tuple(float(v) for v in self.beta_prior))
        errors = choice_errors(self) + _range_errors(self)
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def prior_mean(self) -> float:
        """a / (a + b): the estimate of a row with no evidence."""
        a, b = self.beta_prior
        return a / (a + b)


def _range_errors(c: OnlineConfig) -> list[str]:
    """One message per field outside its range, each naming the field."""
    checks = [
        ("ema_decay", c.ema_decay, 0.0 <= c.ema_decay < 1.0, "in [0, 1)"),
        ("beta_prior", c.beta_prior, len(c.beta_prior) == 2 and all(v > 0 and math.isfinite(v)
                                                                    for v in c.beta_prior), "two numbers > 0"),
        ("beta_forget", c.beta_forget, 0.0 < c.beta_forget <= 1.0, "in (0, 1]"),
        ("solved_threshold", c.solved_threshold, math.isfinite(c.solved_threshold), "finite"),
        ("band_lo", c.band_lo, 0.0 <= c.band_lo <= c.band_hi, "in [0, band_hi]"),
        ("band_hi", c.band_hi, c.band_lo <= c.band_hi <= 1.0, "in [band_lo, 1]"),
        ("retry_probability", c.retry_probability, 0.0 <= c.retry_probability <= 1.0, "in [0, 1]"),
        ("min_weight", c.min_weight, 0.0 < c.min_weight < math.inf, "> 0 (and finite)"),
        ("seed_trials", c.seed_trials, 0.0 < c.seed_trials < math.inf, "> 0 (and finite)"),
        ("unsolved_below", c.unsolved_below, 0.0 < c.unsolved_below <= c.hard_max, "in (0, hard_max]"),
        ("hard_max", c.hard_max, 0.0 < c.hard_max <= c.medium_max, "in (0, medium_max]"),
        ("medium_max", c.medium_max, c.hard_max <= c.medium_max < 1.0, "in [hard_max, 1)"),
    ]
    return [f"{name}={value!r} must be {rule}" for name, value, ok, rule in checks if not ok]


@dataclasses.dataclass(frozen=True, eq=False)
class OnlineState:
    """Every training row's online difficulty (arrays over the rows, indexed by dataset row)."""

    pass_rate: np.ndarray   # float64 [N]: the estimate; NaN = no evidence yet
    trials: np.ndarray      # float64 [N]: rollouts behind it (seed pseudo-rollouts included; beta: discounted)
    successes: np.ndarray   # float64 [N]: the solved ones among them
    last_step: np.ndarray   # int64 [N]: the last step that updated the row; -1 = never seen in training
    retired: np.ndarray     # bool [N]: band policy: the estimate left the band (drawn only as a re-try)
    retired_total: int = 0  # times a row was retired
    retried_total: int = 0  # updates of a row drawn while retired
    returned_total: int = 0  # re-tried rows whose estimate came back into the band

    @property
    def num_rows(self) -> int:
        return int(self.pass_rate.shape[0])

    def copy(self) -> OnlineState:
        return dataclasses.replace(self, **{name: getattr(self, name).copy() for name in _ARRAYS})


_ARRAYS = {"pass_rate": np.float64, "trials": np.float64, "successes": np.float64, "last_step": np.int64,
           "retired": np.bool_}
_COUNTERS = ("retired_total", "retried_total", "returned_total")


# ---- seeds --------------------------------------------------------------------------------

def level_pass_rates(config: OnlineConfig) -> dict[str, float]:
    """The pass rate a seed level stands for: 0 for unsolved (SPEC 2.1: no pass at ratio 0), else the
    middle of the level's band, so `levels` of a row seeded by level gives that level back."""
    return {"unsolved": 0.0, "hard": (config.unsolved_below + config.hard_max) / 2,
            "medium": (config.hard_max + config.medium_max) / 2, "easy": (config.medium_max + 1.0) / 2}


def seed_rates(num_rows: int, config: OnlineConfig, seed_pass_rates=None, seed_levels=None) -> np.ndarray:
    """float64 [N]: each row's seed pass rate (a measured rate first, else its level's), NaN = no seed."""
    seeds = np.full(num_rows, np.nan)
    if seed_levels is not None:
        names = np.asarray(seed_levels, dtype=object)
        _check_length("seed_levels", names, num_rows)
        by_level = level_pass_rates(config)
        unknown = sorted({str(v) for v in names if v not in by_level and v not in ("", None)})
        if unknown:
            raise ValueError(f"seed_levels: {unknown} are not levels; allowed {list(LEVELS)} or '' (no seed)")
        for name, rate in by_level.items():
            seeds[names == name] = rate
    if seed_pass_rates is not None:
        rates = np.asarray(seed_pass_rates, np.float64)
        _check_length("seed_pass_rates", rates, num_rows)
        measured = ~np.isnan(rates)
        if np.any((rates[measured] < 0) | (rates[measured] > 1)):
            raise ValueError("seed_pass_rates must lie in [0, 1] (NaN = no seed)")
        seeds[measured] = rates[measured]
    return seeds


def seeds_from_records(records: Sequence[Mapping[str, Any]], num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(pass rates float64 [N], PISM levels object [N]) from score-file records, for `init`.

    A record's pass rate is passes / attempts at mask ratio 0 (SPEC 2.1's unmasked image); rows
    without a record, or whose record did not score ratio 0, get NaN and level "".
    """
    rates, levels_ = np.full(num_rows, np.nan), np.full(num_rows, "", dtype=object)
    seen = set()
    for record in records:
        row = int(record["source_row"])
        if not 0 <= row < num_rows or row in seen:
            raise ValueError(f"score record {record.get('id')!r}: source_row {row} is outside the {num_rows} rows "
                             f"or repeated")
        seen.add(row)
        ratios, passes, attempts = _listed(record.get("ratios")), _listed(record.get("passes")), record.get("attempts")
        if ratios and ratios[0] == 0.0 and passes and passes[0] >= 0 and attempts:
            rates[row] = passes[0] / attempts
        levels_[row] = record.get("pism_level") or ""
    return rates, levels_


def _listed(values) -> list:
    """A record's list column as a list (None: empty; a numpy array from a parquet reader: its values)."""
    return [] if values is None else list(values)


def _check_length(name: str, values: np.ndarray, num_rows: int) -> None:
    if values.shape != (num_rows,):
        raise ValueError(f"{name} has shape {values.shape}; expected ({num_rows},), one value per row")


# ---- the state ----------------------------------------------------------------------------

def init(num_rows: int, config: OnlineConfig, seed_pass_rates=None, seed_levels=None) -> OnlineState:
    """The state before training: no row seen, seeded rows estimated from their seeds.

    A seed (`seed_rates`: a measured pass rate, else a level's `level_pass_rates`) counts as
    `seed_trials` rollouts of which seed * seed_trials passed. The ema estimate starts at the
    seed; the beta estimate at the posterior mean of those pseudo-rollouts.
    """
    if num_rows < 0:
        raise ValueError(f"num_rows={num_rows} must be >= 0")
    seeds = seed_rates(num_rows, config, seed_pass_rates, seed_levels)
    seeded = ~np.isnan(seeds)
    trials = np.where(seeded, config.seed_trials, 0.0)
    successes = np.where(seeded, seeds * config.seed_trials, 0.0)
    pass_rate = seeds.copy()
    if config.estimator == "beta":
        pass_rate[seeded] = _posterior_mean(successes[seeded], trials[seeded], config)
    return OnlineState(pass_rate=pass_rate, trials=trials, successes=successes,
                       last_step=np.full(num_rows, -1, np.int64), retired=np.zeros(num_rows, bool))


def _posterior_mean(successes, trials, config: OnlineConfig):
    a, b = config.beta_prior
    return (a + successes) / (a + b + trials)


def solved_counts(rows, rewards, num_generations: int, num_rows: int,
                  config: OnlineConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 [P], solved int64 [P]): each prompt's row and how many of its G rewards reach the threshold.

    rewards are prompt-major ([prompt 0's G rewards][prompt 1's] ...), as GRPO's rollouts hold them.
    """
    rows = np.asarray(rows, np.int64).reshape(-1)
    rewards = np.asarray(rewards, np.float64).reshape(-1)
    if num_generations < 1:
        raise ValueError(f"num_generations={num_generations} must be >= 1")
    if rewards.size != rows.size * num_generations:
        raise ValueError(f"{rewards.size} rewards for {rows.size} rows x num_generations {num_generations}: "
                         f"expected {rows.size * num_generations} (prompt-major)")
    if rows.size and (rows.min() < 0 or rows.max() >= num_rows):
        raise ValueError(f"rows {rows[(rows < 0) | (rows >= num_rows)][:10].tolist()} are outside the "
                         f"{num_rows} rows of the state")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite (a NaN reward cannot say whether the row was solved)")
    solved = (rewards.reshape(rows.size, num_generations) >= config.solved_threshold).sum(axis=1)
    return rows, solved.astype(np.int64)


def update(state: OnlineState, rows, rewards, num_generations: int, step: int, config: OnlineConfig) -> OnlineState:
    """A new state after one step's rollouts: each prompt's G rewards update its row, in order.

    rows: [P] the dataset row of each prompt; rewards: [P * G] prompt-major. A row repeated in
    `rows` is updated once per occurrence, in order. Under the band policy a row whose estimate
    leaves [band_lo, band_hi] is retired, and a retired row whose estimate comes back is
    un-retired; an update of a retired row is a re-try (counted in retried_total).
    """
    if step < 0:
        raise ValueError(f"step={step} must be >= 0")
    rows, solved = solved_counts(rows, rewards, num_generations, state.num_rows, config)
    new = state.copy()
    counters = {name: getattr(state, name) for name in _COUNTERS}
    for row, passed in zip(rows.tolist(), solved.tolist()):
        _estimate_row(new, row, passed, num_generations, config)
        new.last_step[row] = step
        if config.policy == "band":
            _band_row(new, row, config, counters)
    return dataclasses.replace(new, **counters)


def _estimate_row(state: OnlineState, row: int, passed: int, num_generations: int, config: OnlineConfig) -> None:
    """Fold one group (passed of num_generations solved) into the row's estimate, in place."""
    if config.estimator == "ema":
        observed = passed / num_generations
        old = state.pass_rate[row]
        state.pass_rate[row] = observed if np.isnan(old) else config.ema_decay * old + (1 - config.ema_decay) * observed
        state.trials[row] += num_generations
        state.successes[row] += passed
        return
    state.trials[row] = config.beta_forget * state.trials[row] + num_generations
    state.successes[row] = config.beta_forget * state.successes[row] + passed
    state.pass_rate[row] = _posterior_mean(state.successes[row], state.trials[row], config)


def _band_row(state: OnlineState, row: int, config: OnlineConfig, counters: dict[str, int]) -> None:
    """Retire or un-retire a just-updated row by its estimate, in place, counting the events."""
    was_retired = bool(state.retired[row])
    outside = not config.band_lo <= state.pass_rate[row] <= config.band_hi
    if was_retired:
        counters["retried_total"] += 1
        counters["returned_total"] += int(not outside)
    else:
        counters["retired_total"] += int(outside)
    state.retired[row] = outside


def merge_updates(state: OnlineState, parts: Sequence[tuple[Any, Any]], num_generations: int, step: int,
                  config: OnlineConfig) -> OnlineState:
    """The state after every process's (rows, rewards) of one step, applied in process order.

    Each process samples and scores its own prompts, so each row's update comes from the
    process that drew it. The caller all-gathers the processes' (rows, rewards) (e.g.
    `mmjax.sharding.allgather_arrays`) and every process calls this with the same list: a pure
    function of the same inputs, so all reach the same state. The processes' slices of a global
    draw, laid side by side in process order, are the global batch, so the state also equals
    one process's `update` with the whole batch.
    """
    for index, (rows, rewards) in enumerate(parts):
        try:
            solved_counts(rows, rewards, num_generations, state.num_rows, config)
        except ValueError as e:
            raise ValueError(f"process {index}'s update: {e}") from None
    rows = np.concatenate([np.asarray(r, np.int64).reshape(-1) for r, _ in parts]) if parts else np.zeros(0, np.int64)
    rewards = np.concatenate([np.asarray(w, np.float64).reshape(-1) for _, w in parts]) if parts else np.zeros(0)
    return update(state, rows, rewards, num_generations, step, config)


def estimates(state: OnlineState, config: OnlineConfig) -> np.ndarray:
    """float64 [N]: the pass rate the policies act on; a row with no evidence gets the prior mean."""
    return np.where(np.isnan(state.pass_rate), config.prior_mean, state.pass_rate)


# ---- levels -------------------------------------------------------------------------------

def level_codes(state: OnlineState, config: OnlineConfig, rows=None) -> np.ndarray:
    """int64 [N] (or [len(rows)]): each row's level as an index into COUNTED_LEVELS.

    unsolved: p < unsolved_below; hard: p <= hard_max; medium: p <= medium_max; easy above;
    unseen: no evidence (the module docstring says where the thresholds come from).
    """
    p = state.pass_rate if rows is None else state.pass_rate[np.asarray(rows, np.int64)]
    code = np.full(p.shape, COUNTED_LEVELS.index("easy"), np.int64)
    with np.errstate(invalid="ignore"):  # NaN compares False everywhere: it is set last
        code[p <= config.medium_max + _EPS] = COUNTED_LEVELS.index("medium")
        code[p <= config.hard_max + _EPS] = COUNTED_LEVELS.index("hard")
        code[p < config.unsolved_below] = COUNTED_LEVELS.index("unsolved")
    code[np.isnan(p)] = COUNTED_LEVELS.index(UNSEEN)
    return code


def levels(state: OnlineState, config: OnlineConfig, rows=None) -> np.ndarray:
    """object [N] (or [len(rows)]): each row's level name (`level_codes`)."""
    return np.asarray(COUNTED_LEVELS, dtype=object)[level_codes(state, config, rows)]


def level_counts(state: OnlineState, config: OnlineConfig, rows=None) -> dict[str, int]:
    """level -> rows at it, every level of COUNTED_LEVELS present (0 included), in that order."""
    counts = np.bincount(level_codes(state, config, rows), minlength=len(COUNTED_LEVELS))
    return {name: int(n) for name, n in zip(COUNTED_LEVELS, counts)}


# ---- checkpoint form ----------------------------------------------------------------------

def to_dict(state: OnlineState) -> dict[str, Any]:
    """JSON-able copy of the state (NaN as None); `from_dict` reads it back bit for bit.

    Python's json writes a float by its shortest exact repr, so floats survive a JSON round trip.
    """
    out: dict[str, Any] = {"version": STATE_VERSION, "num_rows": state.num_rows}
    out["pass_rate"] = [None if math.isnan(v) else v for v in state.pass_rate.tolist()]
    for name in ("trials", "successes", "last_step", "retired"):
        out[name] = getattr(state, name).tolist()
    out.update({name: int(getattr(state, name)) for name in _COUNTERS})
    return out


def from_dict(data: Mapping[str, Any]) -> OnlineState:
    """The state `to_dict` wrote (ValueError naming what is missing or the wrong size)."""
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"online state version {data.get('version')!r}; this mmjax reads version {STATE_VERSION}")
    missing = [k for k in ("num_rows", *_ARRAYS, *_COUNTERS) if k not in data]
    if missing:
        raise ValueError(f"online state lacks {missing}")
    num_rows = int(data["num_rows"])
    arrays = {}
    for name, dtype in _ARRAYS.items():
        values = data[name]
        if name == "pass_rate":
            values = [math.nan if v is None else v for v in values]
        arrays[name] = np.asarray(values, dtype).reshape(-1)
        _check_length(f"online state's {name}", arrays[name], num_rows)
    return OnlineState(**arrays, **{name: int(data[name]) for name in _COUNTERS})
