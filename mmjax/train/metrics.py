"""Per-step training metrics: WORKDIR/metrics.jsonl, TensorBoard scalars in WORKDIR/tb, a tqdm bar.

    with MetricsWriter(workdir, process_index=jax.process_index(), resume_step=restored_step) as log:
        bar = progress(total_steps, initial=restored_step or 0, process_index=jax.process_index())
        for step in range(start, total_steps + 1):
            ...
            log.write(step, {"reward": r, "loss": l, "step_time": dt})
            bar.set_postfix(progress_postfix(metrics), refresh=False)
            bar.update()

- metrics.jsonl holds one JSON object per step, {"step": N, name: value, ...}, flushed on
  every write so a crash keeps everything logged before it. Non-finite values are written
  as null (JSON has no NaN) and left out of TensorBoard, with one warning per metric name.
- Resuming (`resume_step=S`, the restored checkpoint's step): rows with step > S, which the
  run is about to redo, are dropped from metrics.jsonl, and TensorBoard is told to purge
  events after S, so neither holds a step twice. `resume_step=None` is a fresh run: any
  old rows and events go. A write whose step is not above the last one written raises.
- Only process 0 writes (multi-host runs call this on every process with its index).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"
POSTFIX_KEYS = {"reward": "{:.3f}", "step_time": "{:.2f}s"}  # TRL's names for the reward and step time

log = logging.getLogger(__name__)


def _scalar(name: str, value: Any) -> float | int:
    """A Python number from a Python / numpy / 0-d jax value, or a TypeError naming the metric."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        array = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - report which metric, not the conversion's internals
        raise TypeError(f"metric {name!r}: {type(value).__name__} is not a number") from e
    if array.shape != () or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"metric {name!r}: expected a scalar number, got {array.dtype} of shape {array.shape}")
    return int(array) if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_ else float(array)


def read_metrics(workdir: str) -> list[dict]:
    """The rows of WORKDIR/metrics.jsonl (a line cut short by a crash at the end is ignored)."""
    return _read_rows(os.path.join(workdir, METRICS_FILE))


def _read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # the unterminated last line of a killed write
                log.warning("%s:%d: dropping a partial last line (the run was killed mid-write)", path, number)
                break
            raise ValueError(f"{path}:{number}: not a JSON object: {e}") from e
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{number}: expected a JSON object with an integer 'step', got {line[:80]!r}")
        rows.append(row)
    return rows


def _truncate(path: str, resume_step: int | None) -> int | None:
    """Keep rows with step <= resume_step (none if None); returns the last kept step."""
    rows = [r for r in _read_rows(path) if resume_step is not None and r["step"] <= resume_step]
    if os.path.exists(path):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in rows)
        os.replace(tmp, path)  # a crash here leaves the old or the new file, never half of one
    return rows[-1]["step"] if rows else None


def _summary_writer_class():
    """tensorboardX.SummaryWriter, imported without torch when torch is not loaded yet.

    tensorboardX imports torch, if installed, only to accept torch tensors; that import took
    2.8 s of every job's start here, and mmjax logs Python floats. A None entry in sys.modules
    makes `import torch` raise ImportError, which tensorboardX handles.
    """
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class MetricsWriter:
    """Appends per-step metrics to WORKDIR/metrics.jsonl and WORKDIR/tb (process 0 only)."""

    def __init__(self, workdir: str, process_index: int = 0, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.enabled = process_index == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self._warned: set[str] = set()
        self._file = self._tb = None
        self.last_step: int | None = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self.last_step = _truncate(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            SummaryWriter = _summary_writer_class()  # noqa: N806
            # purge_step makes TensorBoard drop the old run's events from that step on
            purge = 0 if resume_step is None else resume_step + 1
            # tensorboardX names the file by the second and host: a writer opened in the same
            # second would truncate the last one's file; nanoseconds keep name order = time order
            self._tb = SummaryWriter(os.path.join(workdir, TB_DIR), purge_step=purge,
                                     filename_suffix=f".{time.time_ns()}")

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Log one step's metrics (names as TRL's: reward, reward_std, kl, step_time, ...)."""
        if not self.enabled:
            return
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"{self.path}: step {step} written after step {self.last_step}; steps must "
                             f"increase (merge a step's metrics into one write; on resume pass resume_step)")
        if "step" in metrics:
            raise ValueError(f"{self.path}: 'step' is a reserved metric name (step {step})")
        values = {name: _scalar(name, value) for name, value in metrics.items()}
        row = {"step": step}
        for name, value in values.items():
            finite = math.isfinite(value)
            if not finite and name not in self._warned:
                self._warned.add(name)
                log.warning("metric %r is %s at step %d: written as null in %s, not sent to TensorBoard "
                            "(warned once per metric)", name, value, step, self.path)
            row[name] = value if finite else None
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in row.items():
                if name != "step" and value is not None:
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()
        self.last_step = step

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int, initial: int = 0, process_index: int = 0, **kwargs):
    """A tqdm bar over training steps (silent off process 0); the loop calls set_postfix / update."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=process_index != 0, **kwargs)


def progress_postfix(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The bar's postfix: the reward and the step time, when the step has them."""
    out = {}
    for name, fmt in POSTFIX_KEYS.items():
        if name in metrics:
            value = _scalar(name, metrics[name])
            out[name] = fmt.format(value) if math.isfinite(value) else str(value)
    return out
