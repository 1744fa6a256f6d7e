"""PISM levels from a survival curve (SPEC.md 2.1).

A sample's curve is `passes[i]`: correct answers out of K attempts at mask ratio
`ratios[i]` (ascending, ratios[0] = 0, the unmasked image). It survives a ratio when
passes > 0 (pass@K).

  lambda*   the smallest ratio > 0 at which it does not survive; 0 when it fails the
            unmasked image; NaN when it survives every ratio.
  unsolved  it does not survive ratio 0.
  hard      lambda* <= hard_max (0.4).
  medium    hard_max < lambda* <= medium_max.
  easy      lambda* > medium_max, or it never fails.

The paper puts 0.7 in medium in its table and in easy in its text (SPEC 2.1): medium_max
= 0.7 is the table (`PRESETS["table"]`, the default), 0.6 the text (`PRESETS["text"]`).

Survival need not be monotone in the ratio: lambda* is the first failure, whatever the
curve does after it, and the score file keeps the whole curve. A curve scored with the
early-stop option holds `NOT_RUN` (-1) at the ratios after its first failure.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmjax.config_help import help_text

LEVELS = ("unsolved", "easy", "medium", "hard")
NOT_RUN = -1  # passes at a ratio the early-stop option did not score
_EPS = 1e-9  # ratios are decimal fractions (0.7 is not exact in binary): compare with slack


@dataclasses.dataclass(frozen=True)
class PismLevels:
    """Where lambda* splits hard / medium / easy (SPEC 2.1)."""

    hard_max: float = dataclasses.field(default=0.4, metadata=help_text(
        "lambda* <= this is hard; SPEC 2.1 0.4"))
    medium_max: float = dataclasses.field(default=0.7, metadata=help_text(
        "hard_max < lambda* <= this is medium, above it easy; SPEC 2.1: 0.7 = the paper's table (default), "
        "0.6 = its text (0.7 easy)"))

    def __post_init__(self):
        if not 0.0 < self.hard_max <= self.medium_max < 1.0:
            raise ValueError(f"PISM thresholds must satisfy 0 < hard_max <= medium_max < 1; got hard_max "
                             f"{self.hard_max}, medium_max {self.medium_max}")


PRESETS = {"table": PismLevels(), "text": PismLevels(medium_max=0.6)}


def check_ratios(ratios) -> np.ndarray:
    """float64 [R]: strictly ascending values in [0, 1) starting with 0, or a ValueError saying why."""
    r = np.asarray(ratios, np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"PISM ratios must be a non-empty list; got {ratios!r}")
    if r[0] != 0.0:
        raise ValueError(f"PISM ratios must start with 0 (the unmasked image decides 'unsolved'); got {r.tolist()}")
    if np.any(np.diff(r) <= 0) or r[-1] >= 1.0:
        raise ValueError(f"PISM ratios must be strictly ascending and below 1; got {r.tolist()}")
    return r


def lambda_stars(ratios, passes) -> np.ndarray:
    """lambda* per curve: float64 [N] from passes int [N, R] (or one curve [R] -> [1])."""
    r = check_ratios(ratios)
    p = np.atleast_2d(np.asarray(passes, np.int64))
    if p.shape[1] != r.size:
        raise ValueError(f"passes have {p.shape[1]} ratios per curve but there are {r.size} ratios")
    failed = p == 0
    any_failed = failed.any(axis=1)
    first = np.where(any_failed, np.argmax(failed, axis=1), r.size)  # first failing ratio (R: none)
    before = np.arange(r.size)[None, :] < first[:, None]
    if np.any((p == NOT_RUN) & before) or np.any(p < NOT_RUN):
        bad = int(np.flatnonzero(((p == NOT_RUN) & before).any(axis=1) | (p < NOT_RUN).any(axis=1))[0])
        raise ValueError(f"curve {bad} has passes {p[bad].tolist()}: only the ratios after the first "
                         f"failure may be {NOT_RUN} (not scored)")
    return np.where(any_failed, r[np.minimum(first, r.size - 1)], np.nan)


def levels_from_lambda(lambda_star, config: PismLevels = PismLevels()) -> np.ndarray:
    """object [N] of LEVELS from lambda* (0 = unsolved, NaN = never fails = easy)."""
    ls = np.atleast_1d(np.asarray(lambda_star, np.float64))
    never = np.isnan(ls)
    with np.errstate(invalid="ignore"):
        unsolved = ls == 0.0
        hard = ~unsolved & (ls <= config.hard_max + _EPS)
        medium = ~unsolved & ~hard & (ls <= config.medium_max + _EPS)
    return np.select([unsolved, hard, medium, never], ["unsolved", "hard", "medium", "easy"], "easy").astype(object)


def levels(ratios, passes, config: PismLevels = PismLevels()) -> tuple[np.ndarray, np.ndarray]:
    """(lambda* float64 [N], level object [N]) of survival curves passes [N, R]."""
    ls = lambda_stars(ratios, passes)
    return ls, levels_from_lambda(ls, config)


def level(ratios, passes, config: PismLevels = PismLevels()) -> str:
    """The level of one curve."""
    return str(levels(ratios, [passes], config)[1][0])
