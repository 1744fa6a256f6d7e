"""Difficulty-aware sample selection (SPEC.md 2, 2.4): the rows of a dataset a job trains on.

Input is the dataset's score file (`mmjax.difficulty.score_file`: one record per row, with
PISM's lambda* and level and CMAB's scores and level). A selection (`SelectionConfig`) is
  subset      full | random (n rows, seeded; or as many as `size_of`'s levels hold) | levels (the
              rows at some levels; n > 0: n of them)
  method      pism | cmab | pism+cmab, combined by `both` (each method rates the row at a
              wanted level) or `either` (one of them does)
  levels      easy, medium, hard, unsolved, and mid+hard (= medium, hard: SPEC 2.4's best)
  thresholds  stored (the levels in the file) | value (PISM re-levelled by lambda*, CMAB by
              its score) | quantile (CMAB levels that reproduce a target mix; PISM by value)
`apply` checks the score file against the data source (every row scored, the ids equal) and
wraps the source in `SelectedSource`, which grain reads like any other random-access source.
The parts live beside this entry point: selection_config (the settings), selection_levels,
selection_source (the narrowed source, the checks against the data), selection_report.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.difficulty.score_file import read_scores
from mmjax.difficulty.selection_config import SelectionConfig, SelectionError
from mmjax.difficulty.selection_levels import (check_stored_levels, format_counts, level_counts,
                                               method_levels, score_columns)
from mmjax.difficulty.selection_report import REPORT, write_report
from mmjax.difficulty.selection_source import SelectedSource, check_rows, data_file

# The jobs' view of selection: they import these names from here.
__all__ = ["REPORT", "Selection", "SelectionConfig", "SelectionError", "apply", "select", "write_report"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Selection:
    """What `select` picked: the rows, and the level counts among them and among all rows."""

    source_rows: np.ndarray                 # int64, ascending: rows of the data source
    mix: dict[str, dict[str, int]]          # method -> level -> count among the selected rows
    available: dict[str, dict[str, int]]    # method -> level -> count among all scored rows
    total: int                              # records in the score file
    score_file: str = ""
    data_file: str = ""
    config: SelectionConfig | None = None

    def __len__(self) -> int:
        return len(self.source_rows)

    def describe(self) -> str:
        mix = "; ".join(f"{m} {format_counts(c)}" for m, c in self.mix.items())
        return (f"selected {len(self)} of {self.total} rows of {self.data_file or 'the data'} "
                f"(score file {self.score_file or '?'}): {mix}")

    def summary(self) -> dict[str, Any]:
        """JSON-able: sizes, level mixes, the selection's settings and every selected row."""
        out = {"selected": len(self), "total": self.total, "score_file": self.score_file,
               "data_file": self.data_file, "mix": self.mix, "available": self.available}
        if self.config is not None:
            out["config"] = dataclasses.asdict(self.config)
        out["source_rows"] = self.source_rows.tolist()
        return out


def select(records: Sequence[Mapping[str, Any]], config: SelectionConfig, *, data_file: str = "") -> Selection:
    """The rows `config` picks from score `records` (their source_row values) and the level mix."""
    score_file = config.score_file
    check_stored_levels(records, config.methods, score_file)
    columns = score_columns(records, score_file)
    levels = {m: method_levels(columns, m, config) for m in config.methods}
    available = {m: level_counts(lv) for m, lv in levels.items()}
    where = f"score file {score_file or '?'}" + (f" (data file {data_file})" if data_file else "")
    picked = np.arange(len(columns["source_row"]))
    if config.subset == "levels":
        picked = _at_levels(levels, config, where, available)
    total = len(columns["source_row"])
    if picked.size == 0:
        raise SelectionError(f"{where}: the selection {_subset_words(config)} is empty; available levels in "
                             f"its {total} rows: {_available_words(available)}")
    n = _at_levels(levels, config, where, available, config.size_of).size if config.size_of else config.n
    if config.size_of and n == 0:
        raise SelectionError(f"{where}: size_of={config.size_of!r}: no row is at those levels, so the random "
                             f"subset would be empty; available levels: {_available_words(available)}")
    if n:
        if n > picked.size:
            raise SelectionError(f"{where}: n={n} rows asked of the {picked.size} the subset "
                                 f"{_subset_words(config)} has; available levels: {_available_words(available)}")
        rng = np.random.default_rng(config.seed)
        picked = np.sort(rng.choice(picked, size=n, replace=False))
    mix = {m: level_counts(lv[picked]) for m, lv in levels.items()}
    return Selection(source_rows=columns["source_row"][picked], mix=mix, available=available, total=total,
                     score_file=score_file, data_file=data_file, config=config)


def _at_levels(levels: Mapping[str, np.ndarray], config: SelectionConfig, where: str,
               available: Mapping[str, Mapping[str, int]], names: str | None = None) -> np.ndarray:
    """The rows at `names` (default: config.levels) by the config's methods."""
    wanted = list(config.wanted_levels(names))
    for method, lv in levels.items():
        not_run = int(np.sum(lv == ""))
        if lv.size and not_run == lv.size:
            raise SelectionError(f"{where}: no row has a {method} level (the scoring job did not run {method}; "
                                 f"score.methods); available levels: {_available_words(available)}")
        if not_run:  # e.g. rows a method could not score: they have no level, so none is picked
            log.warning("%s: %d of %d rows have no %s level and are left out of levels %s", where, not_run,
                        lv.size, method, ",".join(wanted))
    hits = [np.isin(lv.astype(str), wanted) for lv in levels.values()]
    keep = np.logical_and.reduce(hits) if config.combine == "both" else np.logical_or.reduce(hits)
    return np.flatnonzero(keep)


def _subset_words(config: SelectionConfig) -> str:
    words = f"subset={config.subset!r}" + (f" size_of={config.size_of!r}" if config.size_of else "")
    if config.subset == "levels":
        words += f" levels={','.join(config.wanted_levels())} by {config.method}"
        if len(config.methods) > 1:
            words += f" ({config.combine})"
        words += f", {config.threshold_mode} thresholds"
    return words


def _available_words(available: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{m} {format_counts(c)}" for m, c in available.items())


def apply(source, config: SelectionConfig):
    """`source` narrowed to the selection's rows (a SelectedSource), or `source` itself without a score file."""
    if not config.score_file:
        if config.subset != "full":
            log.warning("data.selection.subset=%r but no data.selection.score_file: using every row of %s",
                        config.subset, data_file(source))
        return source
    records = read_scores(config.score_file)
    check_rows(records, source, config.score_file)
    selection = select(records, config, data_file=data_file(source))
    return SelectedSource(source, selection.source_rows, selection=selection)
