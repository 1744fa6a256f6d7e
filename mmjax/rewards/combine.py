"""Weighted sum of registered rewards, keeping each function's values for logging."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmjax.rewards import registry


@dataclasses.dataclass(frozen=True)
class RewardOutput:
    """``total[i] = sum_name weight[name] * per_function[name][i]`` (values unweighted).

    ``metrics``: the batch's counts recorded by the rewards, e.g.
    ``{"accuracy_math/math_timeouts": 2, "accuracy_math/math_checks": 40}`` (see
    ``registry.record_metric``), to log next to the per-function values.
    """

    total: list[float]
    per_function: dict[str, list[float]]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


class CombinedReward:
    """Calls each named reward once per batch and sums them with weights."""

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None):
        if not weights:
            raise ValueError("combine() needs at least one reward")
        options = dict(options or {})
        stray = sorted(set(options) - set(weights))
        if stray:
            raise ValueError(f"options given for reward(s) {stray} that have no weight; weights: {sorted(weights)}")
        for name, weight in weights.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight):
                raise ValueError(f"weight of reward {name!r} must be a finite number, got {weight!r}")
        self.weights = {name: float(w) for name, w in weights.items()}
        self.fns = {name: registry.get(name, **options.get(name, {})) for name in weights}

    def __call__(self, completions: Sequence[str], targets: Sequence[Any] | None = None, **kwargs: Any) -> RewardOutput:
        with registry.collecting_metrics() as metrics:
            per_function = {name: fn(completions, targets, **kwargs) for name, fn in self.fns.items()}
        total = [
            math.fsum(self.weights[name] * values[i] for name, values in per_function.items())
            for i in range(len(completions))
        ]
        return RewardOutput(total=total, per_function=per_function, metrics=metrics)


def combine(weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None) -> CombinedReward:
    """E.g. ``combine({"format": 1.0, "accuracy_math": 1.0}, {"accuracy_math": {"container": "boxed"}})``.

    Unknown names and options fail here, at construction, not in the middle of training.
    """
    return CombinedReward(weights, options)
