"""The selection's settings (`SelectionConfig`) and the names they may take.

A job's `config.data.selection` is read into a `SelectionConfig`, which checks itself on
construction; `mmjax.difficulty.selection` applies it.
"""

from __future__ import annotations

import dataclasses

from mmjax.config_help import help_text
from mmjax.difficulty import cmab, pism

LEVELS = cmab.LEVELS  # unsolved, easy, medium, hard (SPEC 2.1 / 2.2)
LEVEL_ALIASES = {"mid+hard": ("medium", "hard")}  # SPEC 2.4's medium + hard training set
SUBSETS = ("full", "random", "levels")
METHODS = {"pism": ("pism",), "cmab": ("cmab",), "pism+cmab": ("pism", "cmab")}
COMBINES = ("both", "either")
THRESHOLD_MODES = ("stored", "value", "quantile")


class SelectionError(ValueError):
    """A score file that does not fit the data, or a selection that picks nothing; names the files and counts."""


def _field(default, text: str):
    if isinstance(default, (tuple, list)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata=help_text(text))
    return dataclasses.field(default=default, metadata=help_text(text))


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Which rows of the data source a job uses, from their difficulty scores (SPEC.md 2)."""

    score_file: str = _field("", "the dataset's score file (scores.parquet / .jsonl or the scoring workdir, "
                                 "mmjax.difficulty.score_file); '' = no selection, every row (mmjax)")
    subset: str = dataclasses.field(default="full", metadata=help_text(
        "full | random (n rows of all, seeded) | levels (rows at `levels`); SPEC 2.4 trains on the full set, a "
        "random subset, unsolved, medium+hard", choices=SUBSETS))
    levels: str | tuple[str, ...] = _field("mid+hard", "subset=levels: comma-separated easy, medium, hard, "
                                           "unsolved, mid+hard (= medium,hard; SPEC 2.4's best)")
    method: str = dataclasses.field(default="pism", metadata=help_text(
        "whose levels: pism (SPEC 2.1) | cmab (SPEC 2.2) | pism+cmab (see combine)", choices=tuple(METHODS)))
    combine: str = dataclasses.field(default="both", metadata=help_text(
        "method=pism+cmab: both (each rates the row at a wanted level) | either (one does); mmjax",
        choices=COMBINES))
    n: int = _field(0, "rows to draw at random (seeded): subset=random needs n > 0; subset=levels: 0 = all "
                       "of them, n > 0 = n of them (SPEC 2.4's random-of-same-size); mmjax")
    size_of: str = _field("", "subset=random: draw as many rows as the scores put at these levels (comma-"
                              "separated, as `levels`, by `method`) instead of n: SPEC 2.4's random-of-same-size "
                              "control, sized by this data's own scoring; mmjax")
    seed: int = _field(0, "seed of the random draw (mmjax)")
    threshold_mode: str = dataclasses.field(default="stored", metadata=help_text(
        "stored (the file's levels) | value (PISM by the lambda* thresholds, CMAB by the score thresholds "
        "below) | quantile (CMAB levels reproducing cmab_target_mix, PISM by value); SPEC 2.2",
        choices=THRESHOLD_MODES))
    pism_hard_max: float = _field(0.4, "PISM: hard if lambda* <= this (SPEC 2.1: 0.4)")
    pism_medium_max: float = _field(0.7, "PISM: medium if hard_max < lambda* <= this, easy above or never "
                                         "failing (SPEC 2.1: 0.7, the paper's table; its text: 0.6)")
    cmab_definition: str = dataclasses.field(default="paper", metadata=help_text(
        "CMAB score column re-levelled: paper (cmab_paper) | code (cmab_code); SPEC 2.2",
        choices=cmab.DEFINITIONS))
    cmab_easy_below: float = _field(0.1, "CMAB value: easy if score < this (SPEC 2.2: 0.1)")
    cmab_hard_from: float = _field(0.4, "CMAB value: hard if in [hard_from, hard_to] (SPEC 2.2: 0.4)")
    cmab_hard_to: float = _field(1.6, "CMAB value: hard's upper end (SPEC 2.2: 1.6)")
    cmab_easy_above: float = _field(1.9, "CMAB value: easy if score > this, medium between (SPEC 2.2: 1.9)")
    cmab_center: float = _field(1.0, "CMAB quantile: rank solved rows by |score - center| (mmjax.difficulty.cmab)")
    cmab_target_mix: tuple[float, ...] = _field((), "CMAB quantile: (easy, medium, hard) shares or counts of "
                                                    "the solved rows, e.g. SPEC 2.2's reasoning 2170,3604,2166")

    def __post_init__(self):
        for name, value, allowed in (("subset", self.subset, SUBSETS), ("method", self.method, tuple(METHODS)),
                                     ("combine", self.combine, COMBINES),
                                     ("threshold_mode", self.threshold_mode, THRESHOLD_MODES),
                                     ("cmab_definition", self.cmab_definition, cmab.DEFINITIONS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")
        if self.n < 0:
            raise ValueError(f"n={self.n} must be >= 0")
        if self.size_of and (self.subset != "random" or self.n):
            raise ValueError(f"size_of={self.size_of!r} sizes a subset='random' draw without n; got "
                             f"subset={self.subset!r}, n={self.n}")
        if self.size_of:
            self.wanted_levels(self.size_of)  # raises on a bad name
        elif self.subset == "random" and self.n == 0:
            raise ValueError("subset='random' needs n > 0 rows to draw (or size_of: levels whose size it takes)")
        if self.subset == "levels":
            self.wanted_levels()  # raises on a bad name
        try:
            self.pism_config()
        except ValueError as e:
            raise ValueError(f"pism_hard_max={self.pism_hard_max}, pism_medium_max={self.pism_medium_max}: {e}") \
                from None
        if self.threshold_mode == "quantile" and self.method == "pism":
            raise ValueError("threshold_mode='quantile' re-levels CMAB only (PISM takes lambda* values): "
                             "use method 'cmab' or 'pism+cmab', or threshold_mode 'value'")
        if self.threshold_mode != "stored" and "cmab" in self.methods:
            self.cmab_config()  # CmabConfig checks the thresholds and the mix

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.method]

    def wanted_levels(self, levels: str | tuple[str, ...] | None = None) -> tuple[str, ...]:
        """`levels` (default: self.levels) as level names, aliases expanded, in LEVELS order."""
        levels = self.levels if levels is None else levels
        names = levels.split(",") if isinstance(levels, str) else list(levels)
        wanted = set()
        for name in (n.strip() for n in names):
            if not name:
                continue
            expanded = LEVEL_ALIASES.get(name, (name,))
            unknown = [x for x in expanded if x not in LEVELS]
            if unknown:
                raise ValueError(f"levels={levels!r}: {name!r} is not one of "
                                 f"{list(LEVELS) + list(LEVEL_ALIASES)}")
            wanted.update(expanded)
        if not wanted:
            raise ValueError(f"at least one level is needed; levels={levels!r}")
        return tuple(level for level in LEVELS if level in wanted)

    def pism_config(self) -> pism.PismLevels:
        """The lambda* thresholds as mmjax.difficulty.pism's own level rule takes them."""
        return pism.PismLevels(hard_max=self.pism_hard_max, medium_max=self.pism_medium_max)

    def cmab_config(self) -> cmab.CmabConfig:
        """The thresholds as a CmabConfig, so re-levelling is mmjax.difficulty.cmab's own rule."""
        return cmab.CmabConfig(
            definition=self.cmab_definition, easy_below=self.cmab_easy_below, hard_from=self.cmab_hard_from,
            hard_to=self.cmab_hard_to, easy_above=self.cmab_easy_above,
            mode="quantile" if self.threshold_mode == "quantile" else "fixed", center=self.cmab_center,
            target_mix=tuple(self.cmab_target_mix) or None)
