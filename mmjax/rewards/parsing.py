"""Answer containers and the think/answer format check (SPEC 1.4).

A completion reasons inside ``<think>...</think>`` and gives its final answer in a
container. Two containers exist, named by string everywhere in mmjax (configs, prompts,
rewards): ``"answer"`` = ``<answer>...</answer>`` (paper, default) and ``"boxed"`` =
``\\boxed{...}`` (released Visual Jigsaw code). Prompts take their instruction from
``CONTAINERS`` so that the prompt and the checker always agree.

The format rule is on ``think_format_ok``. Its ``"boxed"`` rule is mmjax's, stricter than
the released Visual Jigsaw check (``<think>.*</think>.*\\boxed{.*}.*`` on the unstripped
text: braces need not balance and the box may sit before a later ``</think>``), and
``last_boxed`` skips a truncated last box where the released extraction reads it as
``"None"``. The released reading is ``mmjax.rewards.jigsaw.released_format_ok`` /
``released_boxed_answer``, used by the jigsaw ``code`` preset (``parser="released"``).
"""

from __future__ import annotations

import re

# The containers live below data and rewards; the reward modules name them through here.
from mmjax.containers import ANSWER, BOXED, CONTAINERS, check_container, wrap_answer  # noqa: F401

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_BOX_OPEN = "\\boxed{"
# An escaped character (\{, \}, \\) never opens or closes a group; a lone trailing "\" is
# skipped like any other character.
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
# One answer block with no nested answer tag, only whitespace around it.
_ANSWER_TAIL = re.compile(r"\s*<answer>((?:(?!</?answer>).)*)</answer>\s*", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``, braces balanced; None if none.

    LaTeX-escaped braces (``\\{``, ``\\}``) are content, not structure, so
    ``\\boxed{\\{1,2\\}}`` gives ``\\{1,2\\}``. A truncated last box is skipped in favour
    of the previous complete one.

    One forward pass (policy text can hold thousands of unclosed boxes): a stack of open
    groups, each remembering where its content begins if it is a box. A box's content is
    complete when the ``}`` popping it arrives; that is the brace its own scan from the
    box would stop at, because every scan reaches the ``{`` of ``\\boxed{`` unescaped (the
    letters before it cannot be escapes) and so agrees from there on.
    """
    first = text.find(_BOX_OPEN)
    if first < 0:
        return None
    box_begins = set()
    at = first
    while at >= 0:
        box_begins.add(at + len(_BOX_OPEN))
        at = text.find(_BOX_OPEN, at + len(_BOX_OPEN))
    stack: list[int] = []  # content start of each open group; -1 for a plain group
    best_begin, best_end = -1, -1
    for m in _BRACE_OR_ESCAPE.finditer(text, first + len(_BOX_OPEN) - 1):
        ch = m.group()
        if ch == "{":
            stack.append(m.end() if m.end() in box_begins else -1)
        elif ch == "}" and stack:  # a stray "}" outside every group closes nothing
            begin = stack.pop()
            if begin > best_begin:
                best_begin, best_end = begin, m.start()
    return None if best_begin < 0 else text[best_begin:best_end]


def _last_answer_tag(text: str) -> str | None:
    start = text.rfind(_ANSWER_OPEN)
    if start < 0:
        return None
    begin = start + len(_ANSWER_OPEN)
    stop = text.find(_ANSWER_CLOSE, begin)
    return None if stop < 0 else text[begin:stop]


def extract_answer(text: str, container: str = ANSWER) -> str | None:
    """Stripped content of the last container in ``text``; None if there is none.

    ``"answer"``: the last ``<answer>`` and the first ``</answer>`` after it (an unclosed
    last tag gives None). ``"boxed"``: see ``last_boxed``.
    """
    if check_container(container) == ANSWER:
        content = _last_answer_tag(text)
    else:
        content = last_boxed(text)
    return None if content is None else content.strip()


def answer_or_text(text: str, container: str = ANSWER) -> str:
    """The container content if present, else the whole stripped text.

    This is the fallback the released accuracy rewards use (math, choice, OCR, grounding).
    """
    content = extract_answer(text, container)
    return text.strip() if content is None else content


def think_format_ok(text: str, container: str = ANSWER) -> bool:
    """True if ``text`` is ``<think>...</think>`` followed by the container.

    The rule, whitespace = any Unicode whitespace:

    - the text, after stripping leading/trailing whitespace, starts with ``<think>``;
    - it contains ``</think>``; everything up to the LAST ``</think>`` is the reasoning
      (any content, may be empty, may span lines);
    - ``"answer"``: after the last ``</think>`` come optional whitespace, exactly one
      ``<answer>...</answer>`` block (content without nested answer tags, may be empty),
      optional whitespace, and nothing else (the paper's ``<think>.*</think>`` followed by
      the container);
    - ``"boxed"``: after the last ``</think>`` there is at least one complete, brace-balanced
      ``\\boxed{...}``; other text before and after it is allowed.
    """
    check_container(container)
    body = text.strip()
    if not body.startswith(_THINK_OPEN):
        return False
    close = body.rfind(_THINK_CLOSE)
    if close < len(_THINK_OPEN):
        return False
    tail = body[close + len(_THINK_CLOSE):]
    if container == ANSWER:
        return _ANSWER_TAIL.fullmatch(tail) is not None
    return last_boxed(tail) is not None
