"""math-verify equality check; run as a script, a worker answering JSON lines on stdin.

Kept free of mmjax imports so the worker (a fresh interpreter started by ``math_check``
for checks made off the main thread) starts fast and never imports the caller's main
script. Request line: ``[pred, gold, timeout_seconds]``; reply line: ``true``/``false``.
"""

from __future__ import annotations

import json
import sys


def _parse(text: str, timeout_seconds: int) -> list:
    from math_verify import parse

    # Bare LaTeX (\sqrt{2}, 2\sqrt{2}) is only read right inside math delimiters; prose
    # with a number in it ("12 apples") is read either way.
    return parse(f"${text}$", parsing_timeout=timeout_seconds) or parse(text, parsing_timeout=timeout_seconds)


def verify_in_process(pred: str, gold: str, timeout_seconds: int) -> bool:
    """math-verify equality of two answer strings, in this process and thread."""
    from math_verify import verify

    gold_parsed = _parse(gold, timeout_seconds)
    pred_parsed = _parse(pred, timeout_seconds)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_seconds))


def serve() -> None:
    for line in sys.stdin:
        try:
            pred, gold, timeout_seconds = json.loads(line)
            equal = verify_in_process(pred, gold, timeout_seconds)
        except Exception:  # noqa: BLE001 - a failed check is a wrong answer; keep serving
            equal = False
        sys.stdout.write("true\n" if equal else "false\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
