"""OCR accuracy (SPEC 2.3): normalised exact, substring, or fuzzy match.

The answer is the container content, else the whole completion (as released); the target
loses its container the same way. Both then lose a ``\\boxed{...}`` wrapper: the data of
the difficulty paper writes OCR solutions as ``\\boxed{X}`` (its data README) and the
released check unboxes both sides before matching, so ``\\boxed{STOP}`` reads as
``STOP`` (left boxed, a substring or fuzzy match against it would fail, and any answer
inside the letters "boxed" would match). Both are then normalised: case-folded, Unicode
punctuation removed, runs of whitespace collapsed to one space, stripped. Reward 1.0 if
the normalised strings are equal, or one contains the other (``allow_substring``,
released behaviour: even a one-letter answer inside the target counts), or
``difflib.SequenceMatcher`` ratio >= ``min_ratio`` (0.5); else 0.0.

Where the released code is wrong (SPEC 4), mmjax does not follow it: an answer that
normalises to nothing (an empty ``\\boxed{}`` included) scores 0.0, where the released
check counts the empty string as a substring of every solution. Counting rows are not
routed through this check (``accuracy`` routes each row by its task column; SPEC 4).
The other differences from the released code, all kept on purpose: ``ocr_score``.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.targets import target_text


def normalise_text(text: str) -> str:
    """Case-folded, punctuation removed, whitespace collapsed."""
    kept = "".join(" " if ch.isspace() else ch for ch in text.casefold() if not unicodedata.category(ch).startswith("P"))
    return " ".join(kept.split())


def ocr_match(answer: str, target: str, *, min_ratio: float = 0.5, allow_substring: bool = True) -> bool:
    """Whether ``answer`` reads as ``target`` under the OCR rules (see module doc)."""
    pred, gold = normalise_text(answer), normalise_text(target)
    if not pred or not gold:
        return False
    if pred == gold or (allow_substring and (pred in gold or gold in pred)):
        return True
    # The ratio costs about len(pred) * len(gold) (more with repeats); its cheap upper bounds
    # (length ratio, shared characters) rule out a long policy answer first, so the full
    # ratio only runs when pred is at most a few times as long as the target.
    matcher = difflib.SequenceMatcher(None, pred, gold)
    return (matcher.real_quick_ratio() >= min_ratio and matcher.quick_ratio() >= min_ratio
            and matcher.ratio() >= min_ratio)


def unbox(text: str) -> str:
    """The content of the last complete ``\\boxed{...}`` in ``text``, else ``text`` itself."""
    content = parsing.last_boxed(text)
    return text if content is None else content


def ocr_score(text: str, target: Any, *, container: str = parsing.ANSWER, min_ratio: float = 0.5,
              allow_substring: bool = True) -> float:
    """1.0 if the completion's answer reads as ``target`` under the OCR rules (module doc), else 0.0.

    Differences from the released ``_calculate_ocr_reward`` / ``_extract_ocr`` besides the
    SPEC 4 fix, all kept on purpose: the released code rewrites both sides when they hold a
    digit or an English number word (to the first digit run, or the number the words spell),
    mmjax does not; it lower-cases and deletes newlines (``a\\nb`` -> ``ab``) but keeps
    punctuation, where mmjax case-folds, turns newlines into spaces and drops punctuation; it
    unboxes the first ``\\boxed{`` up to the first ``}`` (nested braces cut the content short),
    mmjax the last complete, brace-balanced box (the same on the data's ``\\boxed{X}``); and
    it reads the first ``<answer>`` block where mmjax reads the last.
    """
    gold = unbox(target_text(target, container))
    if not normalise_text(gold):
        raise registry.BadTarget(f"OCR target {gold[:80]!r} is only punctuation/whitespace")
    answer = unbox(parsing.answer_or_text(text, container))
    return float(ocr_match(answer, gold, min_ratio=min_ratio, allow_substring=allow_substring))


@registry.register("accuracy_ocr")
def ocr_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    min_ratio: float = 0.5,
    allow_substring: bool = True,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}; targets are the expected text."""
    parsing.check_container(container)
    return registry.score_rows(
        "accuracy_ocr",
        lambda text, target: ocr_score(text, target, container=container, min_ratio=min_ratio,
                                       allow_substring=allow_substring),
        completions, targets)
