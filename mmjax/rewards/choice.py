"""Multiple-choice accuracy by option letter (SPEC 2.3).

``parse_choice`` reads the option letter (A-Z) from the container content, or from the
whole completion when there is no container. Rules, first that applies wins:

1. the whole answer is one letter, maybe wrapped or marked: ``B``, ``b``, ``(B)``,
   ``B.``, ``B)``, ``**B**``;
2. the LAST "answer is X" / "answer: X" / "answer is option (x)" statement; there a
   lowercase letter counts only in parentheses or at the very end (``a`` is an article);
3. a leading option marker: ``(B) a cat``, ``(b) Closed`` (MMVP writes its options so),
   ``B. a cat``, ``B: ...``;
4. the first parenthesised capital: ``... so (C) is right``;
5. the first capital letter standing alone, skipping ``A``/``I`` used as a word
   (followed by a space and a lowercase letter: "A cat", "I think").
Reward 1.0 if the letter equals the target's (read by the same rules), else 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.targets import target_text

_WRAPPING = " \t\r\n*_`'\""
_BARE = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_STATEMENT = re.compile(
    r"(?i:\banswer\b)(?:\s+(?i:is)\b)?\s*(?::\s*)?(?:(?i:option)\b\s*)?"
    r"(?:\(([A-Za-z])\)|([A-Z])(?![A-Za-z0-9'])|([a-z])(?=[.)]?\s*$))"
)
_LEADING = re.compile(r"\(([A-Za-z])\)|([A-Z])[.:)](?:\s|$)")
_PARENTHESISED = re.compile(r"\(([A-Z])\)")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-Z])(?![A-Za-z0-9'])")
_WORD_AFTER = re.compile(r"\s+[a-z]")


def parse_choice(answer: str) -> str | None:
    """The option letter (upper case) in ``answer``, or None (see module doc)."""
    body = answer.strip(_WRAPPING)
    if (m := _BARE.fullmatch(body)) is not None:
        return m.group(1).upper()
    statements = list(_STATEMENT.finditer(body))
    if statements:
        last = statements[-1]
        return next(g for g in last.groups() if g is not None).upper()
    if (m := _LEADING.match(body)) is not None:
        return (m.group(1) or m.group(2)).upper()
    if (m := _PARENTHESISED.search(body)) is not None:
        return m.group(1)
    for m in _STANDALONE.finditer(body):
        if m.group(1) in "AI" and _WORD_AFTER.match(body, m.end()):
            continue
        return m.group(1)
    return None


def choice_score(text: str, target: Any, *, container: str = parsing.ANSWER) -> float:
    gold = parse_choice(target_text(target, container))
    if gold is None:
        raise registry.BadTarget(f"no option letter in target {str(target)[:80]!r}")
    return float(parse_choice(parsing.answer_or_text(text, container)) == gold)


@registry.register("accuracy_choice")
def choice_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    **kwargs: Any,
) -> list[float]:
    """Range {0, 1}; targets are option letters (``"B"``, ``"(B)"``, ``"B. text"``)."""
    parsing.check_container(container)
    return registry.score_rows("accuracy_choice", lambda text, target: choice_score(text, target, container=container),
                               completions, targets)
