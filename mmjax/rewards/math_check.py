"""Symbolic answer equality with math-verify, in worker processes, under time budgets.

math-verify's own timeouts are whole-second ``signal.alarm`` calls, which work only on
the main thread, and a signal cannot stop a computation stuck in C code. A power tower
(``2^{2^{2^{2^{2^{2}}}}}``) or a huge factorial runs until stopped, so every check runs
in a worker interpreter (``math_worker.py`` run as a script, talking JSON lines over
pipes), never in the training process:

- ``check_batch(pairs, budget)``: what the math rewards use. A small pool of workers
  (``MathBudget.workers``, started on first use and reused across calls) checks the
  rows in parallel. Each row has ``MathBudget.row_seconds`` for its whole check, timed by
  the worker itself; a worker still silent at ``_kill_after(row_seconds)`` is stuck, so
  it is killed and replaced. The whole batch has a deadline (``MathBudget.deadline``);
  rows not answered by then count as timed out and their busy workers are replaced.
  Batches from different threads take turns.
- ``math_equal(pred, gold, timeout_seconds)``: one check; on the main thread in process
  with math-verify's own (whole-second) timeouts, elsewhere through one shared worker
  that the caller waits at most ``_deadline(timeout_seconds)`` for.

A timed-out row is a failed check: the rewards score it 0 (the exact-string fallback in
``math_answer`` runs first) and record it in the registry's metrics channel as
``<reward>/math_timeouts``, next to ``<reward>/math_checks`` (rows sent to math-verify);
see ``registry.record_metric``.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import logging
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mmjax.rewards.math_worker import READY, TIMEOUT, verify_in_process

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")
# A fresh worker imports sympy and math-verify and runs a warm-up check: about 1 s on an
# idle core, several on a loaded host. Waited for before a batch's clock starts.
_START_SECONDS = 60.0
# Time for a few hung workers to be replaced within one batch (each restart is a start-up).
_RESTART_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class MathBudget:
    """Time limits of one batch of math-verify checks.

    ``row_seconds`` (0.5): the whole check of one row, both parses and every comparison.
    Where the default comes from: on normal answers (fractions, surds, sets, intervals,
    equations, polynomial identities) a warm worker takes 1-110 ms on a loaded 2-core
    test host, so 0.5 s leaves about 5x headroom, while an answer that would run forever
    costs 0.5 s instead of the up to 6 x 5 s that math-verify's default per-step alarms
    allow (the cause of ten-minute GRPO steps).

    ``batch_seconds``: the whole batch, after the pool is up. None (default): the time
    the rows take if every one runs out its budget, ``row_seconds * ceil(rows / workers)``,
    plus ``_RESTART_SECONDS`` (5 s) for replacing a few hung workers. Rows not answered by
    then score as timed out.

    ``workers`` (2): worker processes checking rows in parallel; each holds sympy (about
    100 MB). The pool is shared by all math rewards and only grows.
    """

    row_seconds: float = 0.5
    batch_seconds: float | None = None
    workers: int = 2

    def __post_init__(self):
        if not (isinstance(self.row_seconds, (int, float)) and math.isfinite(self.row_seconds)
                and self.row_seconds > 0):
            raise ValueError(f"MathBudget.row_seconds must be a finite number > 0, got {self.row_seconds!r}")
        if self.batch_seconds is not None and not (
                isinstance(self.batch_seconds, (int, float)) and self.batch_seconds > 0):
            raise ValueError(f"MathBudget.batch_seconds must be None or a number > 0, got {self.batch_seconds!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"MathBudget.workers must be an int >= 1, got {self.workers!r}")

    def deadline(self, rows: int) -> float:
        """Seconds the whole batch of ``rows`` may take once the pool is up."""
        if self.batch_seconds is not None:
            return float(self.batch_seconds)
        return self.row_seconds * math.ceil(rows / self.workers) + _RESTART_SECONDS


def _kill_after(row_seconds: float) -> float:
    # The worker's own timer ends the check at row_seconds and replies at once; silence
    # past twice that means C code the timer cannot interrupt.
    return 2.0 * row_seconds + 0.1


class _Worker:
    """One ``math_worker.py`` interpreter and the request it is answering, if any."""

    def __init__(self):
        # -P: the script's folder is not put on sys.path, so its sibling modules cannot
        # shadow anything math-verify imports.
        self.proc = subprocess.Popen(
            [sys.executable, "-P", str(_WORKER_SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.owner = os.getpid()  # a forked child inherits this object but must not use or kill it
        self.ready = False
        self.row: int | None = None  # batch row in flight
        self.sent_at = 0.0
        self.dead = False
        self._buffer = b""

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def poll(self) -> int | None:
        return self.proc.poll()

    def send(self, pred: str, gold: str, budget_seconds: float) -> bool:
        """Sends one request; False if the worker is gone."""
        try:
            self.proc.stdin.write((json.dumps([pred, gold, budget_seconds]) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError:
            self.dead = True
            return False
        self.sent_at = time.monotonic()
        return True

    def read_lines(self) -> list[str]:
        """The complete lines available now (call when select says readable); EOF sets ``dead``."""
        try:
            chunk = os.read(self.fileno(), 65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.dead = True
            return []
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode("utf-8", "replace").strip() for line in lines]

    def wait_line(self, seconds: float) -> str | None:
        """The next line within ``seconds``; None on timeout or EOF."""
        end = time.monotonic() + seconds
        while not self.dead:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self], [], [], left)[0]:
                return None
            lines = self.read_lines()
            if lines:
                return lines[0]  # one request in flight at a time: never more than one line
        return None

    def kill(self) -> None:
        self.dead = True
        try:
            if self.owner == os.getpid():
                self.proc.kill()
                self.proc.wait()
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass


class _Pool:
    """Workers for ``check_batch``; the list only grows, dead workers are replaced in place."""

    def __init__(self):
        self.workers: list[_Worker] = []

    def ensure(self, n: int) -> list[_Worker]:
        """The first ``n`` workers, started if missing, restarted if dead."""
        for worker in self.workers:
            if worker.owner != os.getpid() or worker.dead or worker.poll() is not None:
                self.replace(worker)
        while len(self.workers) < n:
            self.workers.append(_Worker())
        return self.workers[:n]

    def replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []


_pool = _Pool()
_pool_lock = threading.Lock()


def check_batch(pairs: Sequence[tuple[str, str]], budget: MathBudget = MathBudget()) -> list[bool | None]:
    """math-verify equality of each ``(pred, gold)``: True, False, or None if it timed out.

    Never raises for a row's content: a worker that crashes on a row makes it False, one
    that hangs is killed and its row is None (see module doc).
    """
    if not pairs:
        return []
    with _pool_lock:
        return _run_batch(list(pairs), budget)


def _wait_until_one_ready(workers: list[_Worker]) -> bool:
    end = time.monotonic() + _START_SECONDS
    while True:
        if any(w.ready for w in workers):
            return True
        starting = [w for w in workers if not w.dead]
        left = end - time.monotonic()
        if not starting or left <= 0:
            return False
        for worker in select.select(starting, [], [], left)[0]:
            worker.ready = READY in worker.read_lines()


def _run_batch(pairs: list[tuple[str, str]], budget: MathBudget) -> list[bool | None]:
    workers = _pool.ensure(budget.workers)
    results: list[bool | None] = [None] * len(pairs)
    if not _wait_until_one_ready(workers):
        logger.warning("no math-verify worker started within %.0f s (see its stderr); %d rows counted as timed out",
                       _START_SECONDS, len(pairs))
        return results
    todo = collections.deque(range(len(pairs)))
    deadline = time.monotonic() + budget.deadline(len(pairs))
    kill_after = _kill_after(budget.row_seconds)
    while True:
        for worker in workers:
            if todo and worker.ready and worker.row is None and not worker.dead:
                row = todo.popleft()
                if worker.send(*pairs[row], budget.row_seconds):
                    worker.row = row
                else:
                    todo.appendleft(row)  # picked up by another worker; this one is replaced below
        busy = [w for w in workers if w.row is not None]
        live = [w for w in workers if not w.dead]
        now = time.monotonic()
        if (not todo and not busy) or not live or now >= deadline:
            break
        wake = min([deadline] + [w.sent_at + kill_after for w in busy])
        for worker in select.select(live, [], [], max(0.0, wake - now))[0]:
            _take_replies(worker, results)
        now = time.monotonic()
        for i, worker in enumerate(workers):
            if worker.row is not None and now >= worker.sent_at + kill_after:
                logger.warning("math-verify worker silent %.2f s past a %.2f s budget (row %d); killed and replaced",
                               now - worker.sent_at, budget.row_seconds, worker.row)
                worker.row = None  # its result stays None: timed out
                workers[i] = _pool.replace(worker)
            elif worker.dead:
                workers[i] = _replace_dead(worker, results)
    for i, worker in enumerate(workers):
        if worker.row is not None:  # past the batch deadline; its late reply must not reach the next batch
            worker.row = None
            workers[i] = _pool.replace(worker)
    return results


def _take_replies(worker: _Worker, results: list[bool | None]) -> None:
    for line in worker.read_lines():
        if line == READY:
            worker.ready = True
        elif worker.row is not None and line in ("true", "false", TIMEOUT):
            results[worker.row] = None if line == TIMEOUT else line == "true"
            worker.row = None
        else:
            logger.warning("math-verify worker sent %r, which answers nothing asked; replaced", line[:80])
            worker.dead = True


def _replace_dead(worker: _Worker, results: list[bool | None]) -> _Worker:
    if worker.row is not None:
        logger.warning("math-verify worker exited (code %s) on row %d; the row counts as wrong",
                       worker.poll(), worker.row)
        results[worker.row] = False
        worker.row = None
    if not worker.ready:  # it never started (e.g. math-verify missing): do not spin on restarts
        return worker
    return _pool.replace(worker)


atexit.register(_pool.close)


# --- one check at a time ---------------------------------------------------------------

_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _deadline(timeout_seconds: int) -> float:
    # The worker's timer ends the whole check at timeout_seconds; then the reply's trip.
    return 2.0 * timeout_seconds + 1.0


def _stop_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker = None


atexit.register(_stop_worker)


def _verify_in_worker(pred: str, gold: str, timeout_seconds: int) -> bool:
    global _worker
    with _worker_lock:
        if _worker is None or _worker.owner != os.getpid() or _worker.dead or _worker.poll() is not None:
            if _worker is not None:
                _worker.kill()
            _worker = _Worker()
        if not _worker.ready:
            _worker.ready = _worker.wait_line(_START_SECONDS) == READY
        sent = _worker.ready and _worker.send(pred, gold, timeout_seconds)
        reply = _worker.wait_line(_deadline(timeout_seconds)) if sent else None
        if reply in ("true", "false", TIMEOUT):
            return reply == "true"
        logger.warning("math-verify worker gave no answer within %.1f s; restarting it, answer counted wrong",
                       _deadline(timeout_seconds))
        _stop_worker()
        return False


def math_equal(pred: str, gold: str, timeout_seconds: int = 5) -> bool:
    """True if math-verify finds ``pred`` equal to ``gold`` (answer strings, not whole outputs).

    One check: for batches of rows use ``check_batch``, which is parallel and bounded.
    """
    if timeout_seconds < 1:
        raise ValueError(f"timeout_seconds must be >= 1 (math-verify uses whole-second alarms), got {timeout_seconds}")
    if threading.current_thread() is threading.main_thread():
        return verify_in_process(pred, gold, timeout_seconds)
    return _verify_in_worker(pred, gold, timeout_seconds)
