"""Difficulty-aware sample selection (SPEC.md 2, 2.4): the rows of a dataset a job trains on.

Input is the dataset's score file (`mmjax.difficulty.score_file`: one record per row, with
PISM's lambda* and level and CMAB's scores and level). A selection (`SelectionConfig`) is
  subset      full | random (n rows, seeded) | levels (the rows at some levels; n > 0: n of them)
  method      pism | cmab | pism+cmab, combined by `both` (each method rates the row at a
              wanted level) or `either` (one of them does)
  levels      easy, medium, hard, unsolved, and mid+hard (= medium, hard: SPEC 2.4's best)
  thresholds  stored (the levels in the file) | value (PISM re-levelled by lambda*, CMAB by
              its score) | quantile (CMAB levels that reproduce a target mix; PISM by value)
`apply` checks the score file against the data source (every row scored, the ids equal) and
wraps the source in `SelectedSource`, which grain reads like any other random-access source.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.config_help import help_text
from mmjax.difficulty import cmab, pism
from mmjax.difficulty.score_file import SCORES, read_scores

log = logging.getLogger(__name__)

LEVELS = cmab.LEVELS  # unsolved, easy, medium, hard (SPEC 2.1 / 2.2)
LEVEL_ALIASES = {"mid+hard": ("medium", "hard")}  # SPEC 2.4's medium + hard training set
NOT_RUN = "not_run"  # how counts show a record whose method did not run (level "" in the file)
# What a stored level column may hold ("" = the method did not run; read_scores reads null as "").
STORED_LEVELS = {"pism": LEVELS + ("",), "cmab": LEVELS + (cmab.UNSCORED, "")}
SUBSETS = ("full", "random", "levels")
METHODS = {"pism": ("pism",), "cmab": ("cmab",), "pism+cmab": ("pism", "cmab")}
COMBINES = ("both", "either")
THRESHOLD_MODES = ("stored", "value", "quantile")
REPORT = "selection.json"
SCORING_SUMMARY = "score_summary.json"  # mmjax.jobs.score.SUMMARY, beside the score file: skip counts


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
    subset: str = _field("full", "full | random (n rows of all, seeded) | levels (rows at `levels`); "
                                 "SPEC 2.4 trains on the full set, a random subset, unsolved, medium+hard")
    levels: str | tuple[str, ...] = _field("mid+hard", "subset=levels: comma-separated easy, medium, hard, "
                                           "unsolved, mid+hard (= medium,hard; SPEC 2.4's best)")
    method: str = _field("pism", "whose levels: pism (SPEC 2.1) | cmab (SPEC 2.2) | pism+cmab (see combine)")
    combine: str = _field("both", "method=pism+cmab: both (each rates the row at a wanted level) | either "
                                  "(one does); mmjax")
    n: int = _field(0, "rows to draw at random (seeded): subset=random needs n > 0; subset=levels: 0 = all "
                       "of them, n > 0 = n of them (SPEC 2.4's random-of-same-size); mmjax")
    seed: int = _field(0, "seed of the random draw (mmjax)")
    threshold_mode: str = _field("stored", "stored (the file's levels) | value (PISM by the lambda* "
                                           "thresholds, CMAB by the score thresholds below) | quantile "
                                           "(CMAB levels reproducing cmab_target_mix, PISM by value); SPEC 2.2")
    pism_hard_max: float = _field(0.4, "PISM: hard if lambda* <= this (SPEC 2.1: 0.4)")
    pism_medium_max: float = _field(0.7, "PISM: medium if hard_max < lambda* <= this, easy above or never "
                                         "failing (SPEC 2.1: 0.7, the paper's table; its text: 0.6)")
    cmab_definition: str = _field("paper", "CMAB score column re-levelled: paper (cmab_paper) | code "
                                           "(cmab_code); SPEC 2.2")
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
        if self.subset == "random" and self.n == 0:
            raise ValueError("subset='random' needs n > 0 rows to draw")
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

    def wanted_levels(self) -> tuple[str, ...]:
        """`levels` as level names, aliases expanded, in LEVELS order."""
        names = self.levels.split(",") if isinstance(self.levels, str) else list(self.levels)
        wanted = set()
        for name in (n.strip() for n in names):
            if not name:
                continue
            expanded = LEVEL_ALIASES.get(name, (name,))
            unknown = [x for x in expanded if x not in LEVELS]
            if unknown:
                raise ValueError(f"levels={self.levels!r}: {name!r} is not one of "
                                 f"{list(LEVELS) + list(LEVEL_ALIASES)}")
            wanted.update(expanded)
        if not wanted:
            raise ValueError(f"subset='levels' needs at least one level; levels={self.levels!r}")
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
        mix = "; ".join(f"{m} {_format_counts(c)}" for m, c in self.mix.items())
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


def _format_counts(counts: Mapping[str, int]) -> str:
    return "{" + ", ".join(f"{k} {v}" for k, v in counts.items()) + "}"


# ---- levels ---------------------------------------------------------------------------------

def _columns(records: Sequence[Mapping[str, Any]], score_file: str) -> dict[str, np.ndarray]:
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


def _counts(levels: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(np.asarray(levels, dtype=str), return_counts=True)
    found = {(str(k) or NOT_RUN): int(v) for k, v in zip(names, counts)}
    order = list(LEVELS) + [cmab.UNSCORED, NOT_RUN]
    return {k: found[k] for k in sorted(found, key=lambda k: (order.index(k) if k in order else len(order), k))}


# ---- selection ------------------------------------------------------------------------------

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


def select(records: Sequence[Mapping[str, Any]], config: SelectionConfig, *, data_file: str = "") -> Selection:
    """The rows `config` picks from score `records` (their source_row values) and the level mix."""
    score_file = config.score_file
    check_stored_levels(records, config.methods, score_file)
    columns = _columns(records, score_file)
    levels = {m: method_levels(columns, m, config) for m in config.methods}
    available = {m: _counts(lv) for m, lv in levels.items()}
    where = f"score file {score_file or '?'}" + (f" (data file {data_file})" if data_file else "")
    picked = np.arange(len(columns["source_row"]))
    if config.subset == "levels":
        picked = _at_levels(levels, config, where, available)
    total = len(columns["source_row"])
    if picked.size == 0:
        raise SelectionError(f"{where}: the selection {_subset_words(config)} is empty; available levels in "
                             f"its {total} rows: {_available_words(available)}")
    if config.n:
        if config.n > picked.size:
            raise SelectionError(f"{where}: n={config.n} rows asked of the {picked.size} the subset "
                                 f"{_subset_words(config)} has; available levels: {_available_words(available)}")
        rng = np.random.default_rng(config.seed)
        picked = np.sort(rng.choice(picked, size=config.n, replace=False))
    mix = {m: _counts(lv[picked]) for m, lv in levels.items()}
    return Selection(source_rows=columns["source_row"][picked], mix=mix, available=available, total=total,
                     score_file=score_file, data_file=data_file, config=config)


def _at_levels(levels: Mapping[str, np.ndarray], config: SelectionConfig, where: str,
               available: Mapping[str, Mapping[str, int]]) -> np.ndarray:
    wanted = list(config.wanted_levels())
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
    words = f"subset={config.subset!r}"
    if config.subset == "levels":
        words += f" levels={','.join(config.wanted_levels())} by {config.method}"
        if len(config.methods) > 1:
            words += f" ({config.combine})"
        words += f", {config.threshold_mode} thresholds"
    return words


def _available_words(available: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{m} {_format_counts(c)}" for m, c in available.items())


# ---- the data source ------------------------------------------------------------------------

class SelectedSource:
    """Only `source_rows` of `source`, in that order; each row keeps its own `where` (grain-compatible)."""

    def __init__(self, source, source_rows: Sequence[int] | np.ndarray, selection: Selection | None = None):
        self.source = source
        self.source_rows = np.asarray(source_rows, np.int64)
        self.selection = selection
        n = len(source)
        outside = self.source_rows[(self.source_rows < 0) | (self.source_rows >= n)]
        if outside.size:
            raise IndexError(f"{source!r} has {n} rows; selected rows {outside[:10].tolist()} are outside it")

    def __len__(self) -> int:
        return len(self.source_rows)

    def __getitem__(self, index: int):
        return self.source[int(self.source_rows[index])]

    def __repr__(self) -> str:
        return f"SelectedSource({self.source!r}, {len(self)} of {len(self.source)} rows)"


def data_file(source) -> str:
    """The file a source reads (what error messages name), or its repr."""
    return getattr(source, "path", None) or getattr(source, "root", None) or repr(source)


def source_ids(source) -> list[str | None] | None:
    """Each row's id as the source gives it, read without decoding images; None where that is not cheap.

    JSONL and parquet files only (the synthetic and folder sources have no ids a score file
    of another dataset would differ in). A row whose line is not JSON gives None.
    """
    from mmjax.data import rows as rows_lib  # pylint: disable=g-import-not-at-top
    from mmjax.data import sources  # pylint: disable=g-import-not-at-top

    def row_id(raw, index):
        if isinstance(raw, Mapping):
            for key in rows_lib.ID_KEYS:
                if raw.get(key) is not None:
                    return str(raw[key])
        return str(index)  # what normalize_row's default_id gives (and the scoring job writes)

    if isinstance(source, sources.JsonlSource):
        ids = []
        with open(source.path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue  # JsonlSource indexes non-blank lines only
                try:
                    ids.append(row_id(json.loads(line), len(ids)))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    ids.append(None)
        return ids
    if isinstance(source, sources.ParquetSource):
        import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

        present = [k for k in rows_lib.ID_KEYS if k in pq.ParquetFile(source.path).schema_arrow.names]
        table = pq.read_table(source.path, columns=present).to_pylist() if present else [{}] * len(source)
        return [row_id(raw, i) for i, raw in enumerate(table)]
    return None


def _scoring_summary(score_file: str) -> tuple[str, dict]:
    """The scoring job's summary beside the score file, and its path ({} if there is none)."""
    folder = score_file if os.path.isdir(score_file) else os.path.dirname(score_file)
    path = os.path.join(folder, SCORING_SUMMARY)
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return path, {}
    return path, summary if isinstance(summary, dict) else {}


def _scoring_skips(score_file: str) -> str:
    """What the scoring job's summary beside the score file says it skipped ('' if nothing is known)."""
    path, summary = _scoring_summary(score_file)
    skipped = summary.get("skipped_total")
    return f" (its scoring job skipped {skipped} rows: {path})" if skipped else ""


def check_rows(records: Sequence[Mapping[str, Any]], source, score_file: str) -> None:
    """Raise SelectionError unless the records score every row of `source` once, under the same ids."""
    data = data_file(source)
    n = len(source)
    rows = np.asarray([int(r["source_row"]) for r in records], np.int64)
    head = f"score file {score_file} does not fit data file {data}"
    outside = np.unique(rows[(rows < 0) | (rows >= n)])
    if outside.size:
        raise SelectionError(f"{head}: it has {len(records)} records, {outside.size} of them for rows the data's "
                             f"{n} rows lack (e.g. {outside[:10].tolist()}); scored on another dataset?")
    missing = np.setdiff1d(np.arange(n), rows)
    summary_path, summary = _scoring_summary(score_file)
    if missing.size and missing.size == summary.get("skipped_total") and summary.get("rows") == n:
        # Rows the scoring job could not score (a corrupt image, no solution, ...) and counted:
        # they have no level, so no subset takes them; training would skip them as well.
        log.warning("score file %s has no record for %d of the %d rows of %s: its scoring job skipped them "
                    "(%s; %s); they are left out of the selection", score_file, missing.size, n, data,
                    summary.get("skipped"), summary_path)
        missing = missing[:0]
    if missing.size:
        raise SelectionError(f"{head}: it scores {n - missing.size} of the data's {n} rows; {missing.size} are "
                             f"missing (e.g. rows {missing[:10].tolist()}){_scoring_skips(score_file)}; finish "
                             f"the scoring job (mode=score reruns skip what is done) or score this data file")
    ids = source_ids(source)
    if ids is None:
        return
    differ = [(int(r["source_row"]), ids[int(r["source_row"])], str(r["id"])) for r in records
              if ids[int(r["source_row"])] is not None and ids[int(r["source_row"])] != str(r["id"])]
    if differ:
        row, data_id, score_id = differ[0]
        raise SelectionError(f"{head}: {len(differ)} of its {len(records)} ids differ from the data's, e.g. row "
                             f"{row} is {data_id!r} in the data and {score_id!r} in the score file; scored on "
                             f"another dataset or another version of it?")


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


def write_report(source, workdir: str) -> Selection | None:
    """A SelectedSource's selection (size, level mixes, rows) written to workdir/selection.json."""
    selection = getattr(source, "selection", None)
    if selection is None:
        return None
    import jax  # pylint: disable=g-import-not-at-top

    if jax.process_index() == 0:  # every process selects the same rows; one file is enough
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, REPORT)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(selection.summary(), f, indent=2)
        os.replace(tmp, path)
    return selection
