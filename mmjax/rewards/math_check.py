"""Symbolic answer equality with math-verify, safe on any thread.

math-verify bounds its sympy work with ``signal.alarm``, which only works on the main
thread of the main interpreter (elsewhere its ``parse`` raises). So:

- on the main thread, math-verify runs in process with its own timeouts;
- on any other thread (e.g. rewards computed in a thread pool), the check goes to a
  worker interpreter (``math_worker.py`` run as a script, started on first use, talking
  JSON lines over pipes), where math-verify is on a main thread with its own timeouts;
  the caller also waits at most ``_deadline(timeout_seconds)``, past which the worker is
  killed (a computation stuck in C code cannot outlive it) and the answer counts as
  wrong. Checks from different threads share the one worker, one at a time.

A signal alarm cannot interrupt a long C-level computation on the main thread either;
answers are container contents, bounded by ``max_chars`` in ``math_answer``.
"""

from __future__ import annotations

import atexit
import json
import logging
import select
import subprocess
import sys
import threading
from pathlib import Path

from mmjax.rewards.math_worker import verify_in_process

logger = logging.getLogger(__name__)

_WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")
_worker: subprocess.Popen | None = None
_worker_lock = threading.Lock()


def _deadline(timeout_seconds: int) -> float:
    # Two parses and up to four comparisons, each bounded by its alarm, plus the worker's
    # start-up (a fresh interpreter importing sympy) on first use.
    return 6.0 * timeout_seconds + 30.0


def _start_worker() -> subprocess.Popen:
    # -P: the script's folder is not put on sys.path, so its sibling modules cannot
    # shadow anything math-verify imports.
    return subprocess.Popen(
        [sys.executable, "-P", str(_WORKER_SCRIPT)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
    )


def _stop_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.kill()
        _worker.wait()
        _worker = None


atexit.register(_stop_worker)


def _verify_in_worker(pred: str, gold: str, timeout_seconds: int) -> bool:
    global _worker
    with _worker_lock:
        if _worker is None or _worker.poll() is not None:
            _worker = _start_worker()
        try:
            _worker.stdin.write(json.dumps([pred, gold, timeout_seconds]) + "\n")
            _worker.stdin.flush()
            ready, _, _ = select.select([_worker.stdout], [], [], _deadline(timeout_seconds))
            reply = _worker.stdout.readline() if ready else ""
        except OSError:
            reply = ""
        if reply.strip() in ("true", "false"):
            return reply.strip() == "true"
        logger.warning("math-verify worker gave no answer within %.0f s; restarting it, answer counted wrong",
                       _deadline(timeout_seconds))
        _stop_worker()
        return False


def math_equal(pred: str, gold: str, timeout_seconds: int = 5) -> bool:
    """True if math-verify finds ``pred`` equal to ``gold`` (answer strings, not whole outputs)."""
    if timeout_seconds < 1:
        raise ValueError(f"timeout_seconds must be >= 1 (math-verify uses whole-second alarms), got {timeout_seconds}")
    if threading.current_thread() is threading.main_thread():
        return verify_in_process(pred, gold, timeout_seconds)
    return _verify_in_worker(pred, gold, timeout_seconds)
