"""Online selection policies (`config.data.online.policy`): which rows the next step trains on.

  static    the candidates as given: the pipeline's own order (today's behaviour, the default).
  band      balanced online filtering (arXiv 2504.03380): a seen row whose estimated pass rate
            left [band_lo, band_hi] is retired (`online_state.update` decides); each draw, each
            retired row rejoins the pool with probability `retry_probability`, so a row that
            became hard again can come back. `count` rows are drawn uniformly from the pool;
            when the pool is too small, the rest are retired rows drawn at random ("refilled").
  weighted  `count` rows drawn without replacement with probability proportional to
            max(w(p), min_weight), w(p) = p(1 - p) (the Bernoulli reward's variance; GRPO gets a
            gradient only from groups whose rewards vary) or sqrt(p(1 - p)).

`candidates` are the rows the offline selection (score file + levels, `SelectedSource`)
allows; only they are eligible. Draws are a pure function of (seed, step, part, state,
candidates): the generator is `np.random.default_rng(SeedSequence([seed, step, part]))`, never
numpy's global one, so a resumed run draws what one that never stopped drew. `part` tells
apart several draws of one step (online filtering's refills: part 1, 2, ...).

    rows, info = draw(state, config, seed=0, step=step, count=global_batch, candidates=selected_rows)
    ... sample and score rows[process * B:(process + 1) * B] on each process ...
    state = merge_updates(state, all_gathered_parts, num_generations=G, step=step, config=config)
    writer.write(step, online_metrics(state, config, info))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmjax.difficulty.online_state import OnlineConfig, OnlineState, estimates, level_counts


def rng_for(seed: int, step: int, part: int = 0) -> np.random.Generator:
    """The generator of one draw: a function of (seed, step, part) alone."""
    if min(seed, step, part) < 0:
        raise ValueError(f"seed={seed}, step={step}, part={part} must all be >= 0 (SeedSequence entropy)")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(step), int(part)]))


def row_weights(p: np.ndarray, config: OnlineConfig) -> np.ndarray:
    """max(w(p), min_weight) for estimates p: the weighted policy's unnormalised draw weights."""
    variance = p * (1.0 - p)
    w = variance if config.weight == "variance" else np.sqrt(variance)
    return np.maximum(w, config.min_weight)


def eligible_rows(state: OnlineState, candidates=None) -> np.ndarray:
    """int64: the candidate rows in their given order (all rows when None); ValueError if out of range or repeated."""
    if candidates is None:
        return np.arange(state.num_rows, dtype=np.int64)
    rows = np.asarray(candidates, np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= state.num_rows):
        raise ValueError(f"candidates {rows[(rows < 0) | (rows >= state.num_rows)][:10].tolist()} are outside "
                         f"the {state.num_rows} rows of the online state")
    if np.unique(rows).size != rows.size:
        raise ValueError("candidates repeat rows; pass each allowed row once")
    return rows


def draw(state: OnlineState, config: OnlineConfig, *, seed: int, step: int, count: int, candidates=None,
         part: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """(rows int64 [count], info): the rows `config.policy` picks for a step, and what it did.

    info: policy; retired (retired rows among the candidates); retried (retired rows drawn
    because their retry coin came up); refilled (retired rows drawn only to fill `count`);
    mean_pass_rate_drawn (mean estimate of the drawn rows, the prior mean for unseen ones);
    levels (level -> candidates at it).
    """
    eligible = eligible_rows(state, candidates)
    if count < 0 or count > eligible.size:
        raise ValueError(f"count={count} rows asked of {eligible.size} eligible rows (policy {config.policy!r})")
    rng = rng_for(seed, step, part)
    if config.policy == "static":
        rows, retried, refilled = eligible[:count], 0, 0
    elif config.policy == "band":
        rows, retried, refilled = _draw_band(state, config, eligible, count, rng)
    else:
        rows, retried, refilled = _draw_weighted(state, config, eligible, count, rng), 0, 0
    info = {"policy": config.policy, "retired": int(state.retired[eligible].sum()), "retried": retried,
            "refilled": refilled, "mean_pass_rate_drawn": _mean_estimate(state, config, rows),
            "levels": level_counts(state, config, eligible)}
    return rows, info


def _draw_band(state: OnlineState, config: OnlineConfig, eligible: np.ndarray, count: int,
               rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """(rows, retried, refilled): count rows from the not-retired rows and the retired ones whose coin came up."""
    retired = state.retired[eligible]
    coin = rng.random(eligible.size) < config.retry_probability  # one per candidate, so it depends on no other row
    in_pool = ~retired | coin
    pool = eligible[in_pool]
    taken = min(count, pool.size)
    picked = pool[rng.permutation(pool.size)[:taken]]
    left_out = eligible[~in_pool]  # retired rows whose coin did not come up
    fill = left_out[rng.permutation(left_out.size)[:count - taken]]
    rows = np.concatenate([picked, fill]).astype(np.int64)
    return rows, int(state.retired[picked].sum()), int(fill.size)


def _draw_weighted(state: OnlineState, config: OnlineConfig, eligible: np.ndarray, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """count rows without replacement, with probability proportional to row_weights."""
    weights = row_weights(estimates(state, config)[eligible], config)
    if count == 0:
        return np.zeros(0, np.int64)
    return rng.choice(eligible, size=count, replace=False, p=weights / weights.sum()).astype(np.int64)


def _mean_estimate(state: OnlineState, config: OnlineConfig, rows: np.ndarray) -> float:
    return float(estimates(state, config)[rows].mean()) if rows.size else float("nan")


def online_metrics(state: OnlineState, config: OnlineConfig, info: dict[str, Any]) -> dict[str, float]:
    """The step's `online/...` metrics (issue 23): the candidates' levels, the draw's retired, re-tried and
    refilled rows and mean estimated pass rate, and the state's running totals."""
    out = {f"online/levels/{name}": float(n) for name, n in info["levels"].items()}
    out.update({f"online/{name}": float(info[name]) for name in ("retired", "retried", "refilled",
                                                                 "mean_pass_rate_drawn")})
    out.update({f"online/{name}": float(getattr(state, name))
                for name in ("retired_total", "retried_total", "returned_total")})
    return out
