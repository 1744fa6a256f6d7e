"""Presets that say they follow the released code, checked row by row against it (issue 10).

The released functions are restated here from their description (Visual Jigsaw's
``check_format`` / ``extract_boxed_content`` / ``compute_score`` /
``has_excessive_repetition``, the difficulty paper's OCR check), and mmjax's readings are
compared with those restatements on hand-written rows and on a seeded corpus.
"""

import random
import re

import pytest

from mmjax import rewards
from mmjax.rewards import jigsaw, ocr
from mmjax.rewards.repetition import has_repetition

CODE = rewards.JIGSAW_PRESETS["code"]
K5 = [2, 1, 3, 5, 4]
RIGHT = "2,1,3,5,4"

# --- the released jigsaw reading, restated ----------------------------------------------

_RELEASED_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)


def released_format(text):
    return _RELEASED_FORMAT.fullmatch(text) is not None


def released_answer(text):
    """Last \\boxed{, then one character at a time: { is +1, } is -1, stop below 0."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return "None"
    content, depth = text[start + len("\\boxed{"):], 0
    for i, ch in enumerate(content):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == -1:
            return content[:i].strip()
    return "None"


# (completion, released format ok, released answer, mmjax format ok (boxed container))
FORMAT_ROWS = [
    ("<think>a</think>\\boxed{2,1,3,5,4}", True, RIGHT, True),
    ("<think>a</think>\\boxed{2,1,3,5,4} done.\n", True, RIGHT, True),  # text after the box
    (" <think>a</think>\\boxed{2,1,3,5,4}", False, RIGHT, True),  # raw text: leading space fails
    ("<think>a</think>\\boxed{2,1,3,5,4}}}", True, RIGHT, True),  # unbalanced: extra closers
    ("<think>a</think>\\boxed{{2,1,3,5,4}", True, "None", False),  # unbalanced: box never closes
    ("<think>a</think>\\boxed{2,1,3,5,4}</think>", True, RIGHT, False),  # box before a later </think>
    ("<think>a</think>x\\boxed{1}</think>\\boxed{2,1,3,5,4}", True, RIGHT, True),
    ("<think>a</think>\\boxed{2,1,3,5,4} \\boxed{5,4", True, "None", True),  # unclosed last box
    ("<think>a</think>\\boxed{\\text{1},2}", True, "\\text{1},2", True),  # nested: depth counting
    ("<think>a</think>\\boxed{\\}}", True, "\\", True),  # escaped brace counts as a brace (mmjax: content)
    ("<think>a</think>\\boxed{1,2,3,4,5} or \\boxed{2,1,3,5,4}", True, RIGHT, True),  # the last box
    ("<think>a</think>\\boxed{ 2,1,3,5,4 }", True, RIGHT, True),  # stripped
    ("<think>a</think>\\boxed{2,1,3,5,4", False, "None", False),  # no } after the box
    ("<think>\\boxed{2,1,3,5,4}</think>", False, RIGHT, False),  # box only inside the think
    ("<think>}</think>\\boxed{2", False, "None", False),  # a } before the box does not count
    ("a</think>\\boxed{2,1,3,5,4}", False, RIGHT, False),  # no <think> at the start
    ("x<think>a</think>\\boxed{2,1,3,5,4}", False, RIGHT, False),
    ("<think>\\boxed{2,1,3,5,4}", False, RIGHT, False),  # no </think>
    ("<think></think>\\boxed{}", True, "", True),  # empty reasoning, empty box
    ("<think>a\n</think>\n\\boxed{2,1,\n3,5,4}\n", True, "2,1,\n3,5,4", True),  # newlines anywhere
]


@pytest.mark.parametrize("text, ok, answer, mmjax_ok", FORMAT_ROWS)
def test_released_reading_row_by_row(text, ok, answer, mmjax_ok):
    assert released_format(text) is ok  # the table is the released rule
    assert released_answer(text) == answer
    assert jigsaw.released_format_ok(text) is ok
    assert jigsaw.released_boxed_answer(text) == answer
    assert rewards.think_format_ok(text, "boxed") is mmjax_ok  # the paper preset keeps mmjax's rule


def _released_total(text, target, *, partial_min_pieces=5):
    """compute_score of the released jigsaw reward, with SPEC 4's permutation rule."""
    penalty = -0.5 if has_repetition(text) else 0.0
    if not released_format(text):
        return 0.0
    try:
        order = [int(piece.strip()) for piece in released_answer(text).split(",")]
    except ValueError:
        order = []
    if order == target:
        return 0.2 + 1.0 + penalty
    k = len(target)
    partial = 0.0
    if k >= partial_min_pieces and sorted(order) == list(range(1, k + 1)):
        partial = 0.2 * sum(o == g for o, g in zip(order, target)) / k
    return 0.2 + partial + penalty


@pytest.mark.parametrize("text, ok, answer, mmjax_ok", FORMAT_ROWS)
def test_code_preset_scores_as_released(text, ok, answer, mmjax_ok):
    (value,) = rewards.get("jigsaw", **CODE)([text], [K5])
    assert value == pytest.approx(_released_total(text, K5))
    right = answer.replace("\n", "").replace(" ", "") == RIGHT  # hand check: int() strips each piece
    assert value == pytest.approx((1.2 if right else 0.2) if ok else 0.0)


def test_box_before_a_later_think_close_differs_between_presets():
    text = "<think>a</think>\\boxed{2,1,3,5,4}</think>"
    assert rewards.get("jigsaw", **CODE)([text], [K5]) == pytest.approx([1.2])
    assert rewards.get("jigsaw_exact", container="boxed", parser="released")([text], [K5]) == [1.0]
    assert rewards.get("jigsaw", container="boxed")([text], [K5]) == [0.0]  # mmjax's stricter rule


def test_code_preset_reads_numbers_with_int():
    # int() takes a sign, surrounding spaces and non-ASCII digits; mmjax's own reading does not.
    for answer in ["+2,1,3,5,4", " 2 , 1 ,3,5, 4 ", "２,１,３,５,４"]:
        text = f"<think>a</think>\\boxed{{{answer}}}"
        assert rewards.get("jigsaw", **CODE)([text], [K5]) == pytest.approx([1.2]), answer
    assert rewards.get("jigsaw", container="boxed")(["<think>a</think>\\boxed{+2,1,3,5,4}"], [K5]) == [
        pytest.approx(0.2)]
    # The released "no-think" variant splits the raw text the same way.
    assert rewards.get("jigsaw", think=False, parser="released", container="boxed")(
        [" +2, 1,3,5,4\n"], [K5]) == pytest.approx([1.0])


def test_partial_credit_keeps_the_permutation_rule():
    """SPEC 4: the released code credits any 5 distinct integers; mmjax needs 1..K."""
    five_distinct = "<think>a</think>\\boxed{2,1,3,9,8}"  # 3 in place, but 9 and 8 are not pieces
    permutation = "<think>a</think>\\boxed{2,1,3,4,5}"
    assert rewards.get("jigsaw", **CODE)([five_distinct, permutation], [K5] * 2) == pytest.approx(
        [0.2, 0.2 + 0.2 * 3 / 5])


def test_released_parser_needs_the_boxed_container():
    with pytest.raises(ValueError, match="container='boxed'"):
        rewards.get("jigsaw", parser="released")(["x"], [K5])
    with pytest.raises(ValueError, match="parser must be one of"):
        rewards.get("jigsaw", parser="verl", container="boxed")(["x"], [K5])


def test_released_reading_matches_the_restatement_on_a_seeded_corpus():
    pieces = ["<think>", "</think>", "\\boxed{", "{", "}", "\\", "2,1,3,5,4", ",", "1", " ", "\n", "x"]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.5:
            text = "<think>" + text
        assert jigsaw.released_format_ok(text) is released_format(text), text
        assert jigsaw.released_boxed_answer(text) == released_answer(text), text
        (value,) = rewards.get("jigsaw", **CODE)([text], [K5])
        assert value == pytest.approx(_released_total(text, K5)), text


# --- repetition: lower(), not casefold() --------------------------------------------------

UPPER = "Die STRASSE ist heute sehr lang und breit"  # 8 words
LOWER = "die straße ist heute sehr lang und breit"  # the same under casefold(), not under lower()


def test_repetition_compares_lines_with_lower():
    assert UPPER.casefold() == LOWER.casefold() and UPPER.lower() != LOWER.lower()
    alternating = "\n".join([UPPER, LOWER] * 2)
    assert not has_repetition(alternating)  # 4 lines, but runs of 1 under lower()
    assert has_repetition("\n".join([UPPER, UPPER.lower(), UPPER.upper(), UPPER]))  # case still ignored
    text = f"<think>\n{alternating}\n</think>\\boxed{{{RIGHT}}}"
    assert rewards.get("jigsaw", **CODE)([text], [K5]) == pytest.approx([1.2])  # no penalty
    assert rewards.get("repetition")([alternating]) == [0.0]


# --- OCR: \boxed{X} solutions are unboxed --------------------------------------------------


@pytest.mark.parametrize(
    "completion, target, expected",
    [
        ("<answer>the sign says stop now</answer>", "\\boxed{STOP}", 1.0),  # target inside the answer
        ("<answer>stop</answer>", "\\boxed{Stop sign ahead}", 1.0),  # answer inside the target
        ("<answer>help</answer>", "\\boxed{hello}", 1.0),  # fuzzy: ratio 0.667
        ("<answer>Google</answer>", "\\boxed{Google}", 1.0),  # exact (the data README's row)
        ("<answer>box</answer>", "\\boxed{zebra}", 0.0),  # boxed, "box" used to be a substring
        ("<answer>\\boxed{Google}</answer>", "\\boxed{Google}", 1.0),  # the answer side unboxed too
        ("<answer>\\boxed{}</answer>", "\\boxed{Google}", 0.0),  # SPEC 4: empty never matches
        ("<answer></answer>", "\\boxed{Google}", 0.0),
    ],
)
def test_ocr_unboxes_solutions(completion, target, expected):
    assert rewards.get("accuracy_ocr")([completion], [target]) == [expected]
    assert rewards.get("accuracy")([completion], [target], task="ocr") == [expected]


def test_ocr_boxed_target_used_to_fail():
    """The raw matcher on the boxed text: what mmjax compared before unboxing."""
    assert not ocr.ocr_match("the sign says stop now", "\\boxed{STOP}")
    assert not ocr.ocr_match("help", "\\boxed{hello}")
    assert ocr.ocr_match("box", "\\boxed{zebra}")
    assert ocr.unbox("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}" and ocr.unbox("plain") == "plain"


def test_ocr_empty_boxed_target_is_a_bad_target(caplog):
    assert rewards.get("accuracy_ocr")(["<answer>x</answer>"], ["\\boxed{}"]) == [0.0]
    assert any("bad target" in r.getMessage() for r in caplog.records)
