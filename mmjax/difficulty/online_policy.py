"""Online selection policies (`config.data.online.policy`): which records the next step trains on.

The pipeline proposes records in its own shuffled order (every row once an epoch); a policy
accepts each one as a batch draws it, or passes it over until its next epoch:

  static    accept every record (today's behaviour, the default).
  band      balanced online filtering (arXiv 2504.03380): a seen row whose estimated pass rate
            left [band_lo, band_hi] is retired (`online_state.update` decides) and is accepted
            only with probability `retry_probability` (a re-try), so a row that became hard
            again can come back; the others are accepted.
  weighted  accept with probability max(w(p), min_weight) / max w, w(p) = p(1 - p) (the
            Bernoulli reward's variance: GRPO gets a gradient only from groups whose rewards
            vary) or sqrt(p(1 - p)). Over the epochs each row is proposed equally often, so the
            accepted rows are drawn with probability proportional to max(w(p), min_weight).

Accepting by a coin per proposal keeps the grain pipeline as it is (workers read and decode
ahead in the stream's order; only the main process decides, at the moment a batch draws the
record). The cost is reading the records passed over: for `weighted`, max w / mean w reads per
accepted row. The coin is a function of (seed, epoch, index) alone and the decision one of the
coin and the state, so a resumed run decides as one that never stopped.

    p = accept_probability(state, config, rows)          # [rows]
    take = coin(seed, epoch, index) < p[i]
"""

from __future__ import annotations

import numpy as np

from mmjax.difficulty.online_state import OnlineConfig, OnlineState, estimates

MAX_WEIGHT = {"variance": 0.25, "std": 0.5}  # w(1/2): the largest p(1 - p) and its square root


def row_weights(p: np.ndarray, config: OnlineConfig) -> np.ndarray:
    """max(w(p), min_weight) for estimates p: the weighted policy's unnormalised draw weights."""
    variance = p * (1.0 - p)
    w = variance if config.weight == "variance" else np.sqrt(variance)
    return np.maximum(w, config.min_weight)


def accept_probability(state: OnlineState, config: OnlineConfig, rows) -> np.ndarray:
    """float64 [len(rows)]: the probability that `config.policy` accepts each row when proposed."""
    rows = np.asarray(rows, np.int64)
    if config.policy == "static":
        return np.ones(rows.shape)
    if config.policy == "band":
        return np.where(state.retired[rows], config.retry_probability, 1.0)
    weights = row_weights(estimates(state, config)[rows], config)
    return np.minimum(weights / max(MAX_WEIGHT[config.weight], config.min_weight), 1.0)


def coin(seed: int, epoch: int, index: int) -> float:
    """A uniform number in [0, 1) for one proposal of record `index` in `epoch`: nothing else."""
    if min(seed, epoch, index) < 0:
        raise ValueError(f"seed={seed}, epoch={epoch}, index={index} must all be >= 0 (SeedSequence entropy)")
    return float(np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index), 23])).random())


def accepts(state: OnlineState, config: OnlineConfig, *, seed: int, epoch: int, index: int) -> bool:
    """Whether the policy takes record `index` proposed in `epoch`."""
    if config.policy == "static":
        return True
    return coin(seed, epoch, index) < float(accept_probability(state, config, [index])[0])
