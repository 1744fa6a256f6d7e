"""math-verify equality check; run as a script, a worker answering JSON lines on stdin.

Kept free of mmjax imports so the worker (a fresh interpreter started by ``math_check``)
starts fast and never imports the caller's main script. Protocol:

- once started, the worker imports math-verify, runs one warm-up check (sympy imports
  parts of itself on first use, which should not count against a row's budget) and
  writes ``ready``;
- request line ``[pred, gold, budget_seconds]``; reply line ``true``, ``false`` or
  ``timeout`` (the whole check, parses and comparisons together, ran past the budget).

The budget is a real-time interval timer (``signal.setitimer``), so it can be a fraction
of a second, unlike math-verify's whole-second alarms, which the worker turns off. The
timer's exception derives from BaseException: math-verify catches ``Exception`` and its
own ``TimeoutException`` around each step and would otherwise go on to the next one.
"""

from __future__ import annotations

import json
import logging
import signal
import sys

READY = "ready"
TIMEOUT = "timeout"


class _OutOfTime(BaseException):
    """Raised by the budget timer; not an Exception, so no handler in math-verify stops it."""


def _parse(text: str, timeout_seconds: int | None) -> list:
    from math_verify import parse

    # Bare LaTeX (\sqrt{2}, 2\sqrt{2}) is only read right inside math delimiters; prose
    # with a number in it ("12 apples") is read either way.
    return parse(f"${text}$", parsing_timeout=timeout_seconds) or parse(text, parsing_timeout=timeout_seconds)


def verify_in_process(pred: str, gold: str, timeout_seconds: int | None) -> bool:
    """math-verify equality of two answer strings, in this process and thread.

    ``timeout_seconds`` bounds each parse and comparison with math-verify's own alarms
    (main thread only); None turns them off.
    """
    from math_verify import verify

    gold_parsed = _parse(gold, timeout_seconds)
    pred_parsed = _parse(pred, timeout_seconds)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_seconds))


def _out_of_time(signum, frame):
    raise _OutOfTime


def verify_within(pred: str, gold: str, budget_seconds: float) -> bool | None:
    """``verify_in_process`` for the whole check within ``budget_seconds``; None if it ran out."""
    signal.setitimer(signal.ITIMER_REAL, max(budget_seconds, 1e-3))  # 0 would mean no timer
    try:
        return verify_in_process(pred, gold, None)
    except _OutOfTime:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _reply(line: str) -> str:
    try:
        pred, gold, budget_seconds = json.loads(line)
        equal = verify_within(pred, gold, float(budget_seconds))
    except _OutOfTime:  # the timer fired between the check and its cancelling
        equal = None
    except Exception:  # noqa: BLE001 - a failed check is a wrong answer; keep serving
        equal = False
    return TIMEOUT if equal is None else ("true" if equal else "false")


def serve() -> None:
    # Ctrl-C in the training process reaches the whole process group; the parent decides
    # when its workers stop (it kills them at exit, and stdin closing ends the loop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _out_of_time)
    # With its timeouts off math-verify warns once that the caller must bound the time: we do.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verify_within("x^2+2x+1", "(x+1)^2", 30.0)
    sys.stdout.write(READY + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(_reply(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
