"""The data source side of a selection: the narrowed source grain reads, and the checks
that a score file scores exactly the rows (and ids) of the data it is applied to.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mmjax.difficulty.selection_config import SelectionError

if TYPE_CHECKING:
    from mmjax.difficulty.selection import Selection

log = logging.getLogger(__name__)

SCORING_SUMMARY = "score_summary.json"  # mmjax.jobs.score.SUMMARY, beside the score file: skip counts


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
