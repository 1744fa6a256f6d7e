"""Each score record's level by a method, as a selection reads them, and level counts.

The score file's stored levels are checked (`check_stored_levels`), or re-levelled from the
raw numbers (`method_levels`) by mmjax.difficulty.pism's and cmab's own rules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.difficulty import cmab, pism
from mmjax.difficulty.score_file import SCORES
from mmjax.difficulty.selection_config import LEVELS, SelectionConfig, SelectionError

NOT_RUN = "not_run"  # how counts show a record whose method did not run (level "" in the file)
# What a stored level column may hold ("" = the method did not run; read_scores reads null as "").
STORED_LEVELS = {"pism": LEVELS + ("",), "cmab": LEVELS + (cmab.UNSCORED, "")}


def score_columns(records: Sequence[Mapping[str, Any]], score_file: str) -> dict[str, np.ndarray]:
    """The columns selection reads, as arrays ordered by source_row (duplicates refused)."""
    order = sorted(range(len(records)), key=lambda i: int(records[i]["source_row"]))
    rows = np.asarray([int(records[i]["source_row"]) for i in order], np.int64)
    repeated = np.unique(rows[1:][rows[1:] == rows[:-1]])
    if repeated.size:
        raise SelectionError(f"score file {score_file or '?'}: {repeated.size} source rows have more than one "
                             f"record (e.g. {repeated[:10].tolist()}); merge or rescore it")

    def column(name, dtype):
        values = [records[i][name] for i in order]
        if name.endswith("_level"):
            values = ["" if v is None else v for v in values]  # as read_scores reads a null
        return np.asarray(values, dtype)

    return {"source_row": rows, "id": column("id", object), "lambda_star": column("lambda_star", np.float64),
            "pism_level": column("pism_level", object), "cmab_paper": column("cmab_paper", np.float64),
            "cmab_code": column("cmab_code", np.float64), "cmab_level": column("cmab_level", object),
            "correct": column("correct", bool)}


def method_levels(columns: Mapping[str, np.ndarray], method: str, config: SelectionConfig) -> np.ndarray:
    """Each row's level by `method`: stored, or re-levelled from the raw numbers; "" where it did not run."""
    stored = np.asarray(columns[f"{method}_level"], dtype=object)
    ran = stored != ""
    if config.threshold_mode == "stored":
        return stored.copy()
    levels = np.full(stored.shape, "", dtype=object)
    if method == "pism":
        levels[ran] = pism.levels_from_lambda(columns["lambda_star"][ran], config.pism_config())
        return levels
    cfg = config.cmab_config()
    scores = columns[f"cmab_{cfg.definition}"][ran]
    relevel = cmab.quantile_levels if cfg.mode == "quantile" else cmab.fixed_levels
    levels[ran] = relevel(scores, columns["correct"][ran], cfg)
    return levels


def level_counts(levels: np.ndarray) -> dict[str, int]:
    """level -> rows at it, in LEVELS order, then unscored and not_run ("" levels)."""
    names, counts = np.unique(np.asarray(levels, dtype=str), return_counts=True)
    found = {(str(k) or NOT_RUN): int(v) for k, v in zip(names, counts)}
    order = list(LEVELS) + [cmab.UNSCORED, NOT_RUN]
    return {k: found[k] for k in sorted(found, key=lambda k: (order.index(k) if k in order else len(order), k))}


def format_counts(counts: Mapping[str, int]) -> str:
    """`{easy 3, hard 1}`: level counts as messages show them."""
    return "{" + ", ".join(f"{k} {v}" for k, v in counts.items()) + "}"


def check_stored_levels(records: Sequence[Mapping[str, Any]], methods: Sequence[str], score_file: str) -> None:
    """Raise SelectionError at the first record whose stored level of one of `methods` is no level.

    Such a value matches no wanted level, so without this its row would quietly drop out of
    every levels subset (it showed only in the counts). Checked in every threshold mode: the
    value/quantile modes still read the stored column to tell rows a method did not run.
    Records are in file order: record i is row i + 1 of the file (its line, in a JSONL file
    without blank lines).
    """
    for method in methods:
        allowed = STORED_LEVELS[method]
        column = f"{method}_level"
        bad = [i for i, r in enumerate(records) if r[column] is not None and r[column] not in allowed]
        if not bad:
            continue
        first = records[bad[0]]
        name = os.path.join(score_file, SCORES) if score_file and os.path.isdir(score_file) else score_file
        more = f"; {len(bad) - 1} more rows have unknown {column} values" if len(bad) > 1 else ""
        raise SelectionError(
            f"score file {name or '?'}: row {bad[0] + 1} (id {first['id']!r}, source row {first['source_row']}) "
            f"has {column} {first[column]!r}, which is not a level: allowed are "
            f"{', '.join(repr(v) for v in allowed if v)} or '' (not scored){more}; rescore the file or fix "
            f"the value")
