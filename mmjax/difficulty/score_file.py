"""The difficulty score file: one record per dataset sample, written by `mode=score`, read by selection.

Layout in the scoring job's workdir:
  scores.parts/part-NNNNNN.parquet   one file per scored batch, each written to a temporary
                                     name and renamed, so a crash loses at most the batch
                                     in flight and never leaves a half-written part;
  scores.parquet                     all parts merged (written the same way) when the job ends;
  scores.jsonl                       the same records as JSON lines, on request.
A rerun reads the parts, skips the ids already there and appends new parts. A part it
cannot read (truncated by a full disk, a copy cut short) is renamed `<part>.corrupt` (kept
for inspection, never deleted) and left out: its rows are not done, so the rerun scores
them again.

Columns (`COLUMNS`): a level column is "" where its method did not run; a float is NaN
where it is undefined (lambda_star of a sample that never fails, a CMAB score of a method
that did not run or of an answer too short for the `code` definition).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

PARTS_DIR = "scores.parts"
SCORES = "scores.parquet"
SCORES_JSONL = "scores.jsonl"

SCHEMA = pa.schema([
    ("id", pa.string()),              # the row's id field, or its index in the source
    ("source_row", pa.int64()),       # index of the row in the data source
    ("where", pa.string()),           # file:line (or file:row) of the row, for people
    ("task", pa.string()),            # the reward's task (math, choice, ocr, count, grounding)
    ("ratios", pa.list_(pa.float64())),  # PISM mask ratios scored, ascending (SPEC 2.1)
    ("passes", pa.list_(pa.int64())),    # correct answers out of `attempts` at each ratio
    ("attempts", pa.int64()),         # K answers per ratio (SPEC 2.1: 10)
    ("lambda_star", pa.float64()),    # smallest ratio > 0 that fails (0 = fails unmasked; NaN = never)
    ("pism_level", pa.string()),      # unsolved | easy | medium | hard | ""
    ("cmab_paper", pa.float64()),     # SPEC 2.2 `paper` score
    ("cmab_code", pa.float64()),      # SPEC 2.2 `code` score
    ("cmab_level", pa.string()),      # unsolved | easy | medium | hard | unscored | ""
    ("correct", pa.bool_()),          # the clean sample's answer was right (CMAB's; else PISM at ratio 0)
])
COLUMNS = tuple(SCHEMA.names)


class ScoreFileError(ValueError):
    """A score file that is missing, unreadable or not in this layout; the message names the file."""


def _normalise(record: Mapping[str, Any], index: int) -> dict[str, Any]:
    missing = [c for c in COLUMNS if c not in record]
    if missing:
        raise ValueError(f"score record {index} (id {record.get('id')!r}) lacks columns {missing}")
    out = {c: record[c] for c in COLUMNS}
    for column in ("lambda_star", "cmab_paper", "cmab_code"):
        value = out[column]
        out[column] = math.nan if value is None else float(value)
    out["id"] = str(out["id"])
    for column in ("pism_level", "cmab_level"):
        if out[column] is None:  # a null (JSON null, parquet null) reads as "did not run", like ""
            out[column] = ""
    return out


def _atomic_write_table(table: pa.Table, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class ScoreWriter:
    """Appends batches of records to `workdir/scores.parts`; `finish` merges them."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.parts_dir = os.path.join(workdir, PARTS_DIR)
        os.makedirs(self.parts_dir, exist_ok=True)
        for leftover in glob.glob(os.path.join(self.parts_dir, "*.tmp-*")):
            os.remove(leftover)  # a part a crash left half-written: its batch is scored again
        self.corrupt_parts: list[dict[str, Any]] = []  # parts moved aside, for the job's summary
        self._parts = [p for p in sorted(glob.glob(os.path.join(self.parts_dir, "part-*.parquet")))
                       if self._readable(p)]
        # Numbers go on after the highest ever used (moved-aside parts included): counting the
        # parts would reuse the name of a live part once one before it is gone.
        used = [int(m.group(1)) for p in os.listdir(self.parts_dir) if (m := _PART_NUMBER.match(p))]
        self._next = max(used, default=-1) + 1

    def _readable(self, path: str) -> bool:
        """True for a part that reads whole; else it is moved aside, recorded and logged."""
        try:
            pq.read_table(path)  # every page, not just the footer: a part is useless unless all of it reads
            return True
        except (OSError, pa.ArrowException) as e:
            error = f"{type(e).__name__}: {e}"
        try:  # the footer may have survived a damaged page; a truncated file has none
            rows = pq.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException):
            rows = None
        aside, n = f"{path}.corrupt", 1
        while os.path.exists(aside):  # an earlier run's bad part of the same name: keep both
            n += 1
            aside = f"{path}.corrupt-{n}"
        os.rename(path, aside)
        self.corrupt_parts.append({"part": path, "moved_to": aside, "rows": rows, "error": error})
        log.warning("score file part %s is unreadable (%s); moved it to %s and scoring %s again",
                    path, error, aside, f"its {rows} rows" if rows is not None else
                    "its rows (how many is unknown: its footer, which holds the count, is unreadable too)")
        return False

    def done_ids(self) -> set[str]:
        """Ids already scored by an earlier run of the job in this workdir."""
        if not self._parts:
            return set()
        return set(_read_table(self._parts, columns=["id"]).column("id").to_pylist())

    def write(self, records: Sequence[Mapping[str, Any]]) -> str | None:
        """One batch's records as the next part file (nothing for an empty batch)."""
        if not records:
            return None
        rows = [_normalise(r, i) for i, r in enumerate(records)]
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        path = os.path.join(self.parts_dir, f"part-{self._next:06d}.parquet")
        _atomic_write_table(table, path)
        self._parts.append(path)
        self._next += 1
        return path

    def finish(self, jsonl: bool = False, update=None) -> str:
        """Merge every part into workdir/scores.parquet (and scores.jsonl); returns the parquet path.

        update: records -> records, applied to the merged records before they are written
        (the scoring job levels CMAB's quantile mode over the whole set with it).
        """
        table = _read_table(self._parts) if self._parts else SCHEMA.empty_table()
        table = table.sort_by("source_row")
        if update is not None:
            rows = [_normalise(r, i) for i, r in enumerate(update(table.to_pylist()))]
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
        path = os.path.join(self.workdir, SCORES)
        _atomic_write_table(table, path)
        if jsonl:
            out = os.path.join(self.workdir, SCORES_JSONL)
            tmp = f"{out}.tmp-{os.getpid()}"
            with open(tmp, "w") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(_jsonable(row)) + "\n")
            os.replace(tmp, out)
        return path


_PART_NUMBER = re.compile(r"part-(\d+)\.parquet")


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _read_table(paths: Iterable[str], columns: Sequence[str] | None = None) -> pa.Table:
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path, columns=list(columns) if columns else None))
        except (OSError, pa.ArrowInvalid) as e:
            raise ScoreFileError(f"{path}: not a readable score file part: {e}") from None
    return pa.concat_tables(tables)


def read_scores(path: str) -> list[dict[str, Any]]:
    """The records of a score file (.parquet, .jsonl, or a scoring workdir), checked against COLUMNS."""
    if os.path.isdir(path):
        path = os.path.join(path, SCORES)
    if not os.path.exists(path):
        raise ScoreFileError(f"{path}: no such score file (run the scoring job, mode=score, first)")
    if path.endswith(".jsonl"):
        records = []
        with open(path) as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ScoreFileError(f"{path}:{line_number}: not JSON: {e}") from None
    else:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as e:
            raise ScoreFileError(f"{path}: not a readable parquet score file: {e}") from None
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise ScoreFileError(f"{path}: not a score file, it lacks columns {missing}")
        records = table.to_pylist()
    try:
        return [_normalise(r, i) for i, r in enumerate(records)]
    except ValueError as e:
        raise ScoreFileError(f"{path}: {e}") from None
