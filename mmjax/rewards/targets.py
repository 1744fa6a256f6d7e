"""Reading scalar targets (math, choice, OCR, counting) the way completions are read."""

from __future__ import annotations

import numbers
from typing import Any

from mmjax.rewards import parsing, registry


def target_text(target: Any, container: str) -> str:
    """A str or real-number target as answer text; a string loses its container if it has one.

    So ``"<answer>3/4</answer>"`` and ``"3/4"`` are the same target. Anything else raises
    ``BadTarget``, as does an empty target.
    """
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Real)):
        raise registry.BadTarget(f"expected a str or number target, got {type(target).__name__}")
    text = parsing.answer_or_text(target, container) if isinstance(target, str) else str(target)
    if not text:
        raise registry.BadTarget("empty target")
    return text
