"""Skipped samples: a marker record, a strict-mode error and a running counter.

A bad or unusable sample never kills the pipeline and never vanishes silently.
Sources and transforms return a `Skipped` record in its place (or raise
`DataError` in strict mode); the pipeline's last stage, in the main process,
drops the markers, counts them per reason and logs each one with its location.
Markers travel through grain's worker processes like any other record, so the
counts are exact even with multiprocess loading.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import Mapping

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A sample that cannot be used, raised instead of skipping in strict mode."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Stands in for a sample that was dropped.

    Attributes:
      reason: short machine-readable key, e.g. "image_unreadable".
      where: location of the bad data, e.g. "train.jsonl:12 (imgs/a.png)".
      detail: human-readable explanation.
    """

    reason: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.reason} at {self.where}: {self.detail}"


def skip_or_raise(strict: bool, reason: str, where: str, detail: str = "",
                  cause: BaseException | None = None) -> Skipped:
    """Returns a `Skipped` marker, or raises `DataError` (chained to `cause`) when `strict`."""
    skipped = Skipped(reason, where, detail)
    if strict and cause is not None:
        raise DataError(str(skipped)) from cause
    if strict:
        raise DataError(str(skipped))  # Keeps the implicit context of a caller's except block.
    return skipped


class SkipCounter:
    """Thread-safe running count of skipped samples per reason."""

    def __init__(self, counts: Mapping[str, int] | None = None):
        self._counts: collections.Counter[str] = collections.Counter(counts or {})
        self._lock = threading.Lock()

    def record(self, skipped: Skipped) -> None:
        with self._lock:
            self._counts[skipped.reason] += 1
            reason_count = self._counts[skipped.reason]
            total = sum(self._counts.values())
        logger.warning("Skipped sample (%s #%d, %d skipped in total): %s",
                       skipped.reason, reason_count, total, skipped)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def set_counts(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts = collections.Counter(counts)

    def __repr__(self) -> str:
        return f"SkipCounter({self.counts})"
