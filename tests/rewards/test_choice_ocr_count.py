"""Multiple-choice, OCR and counting accuracy: hand-computed tables."""

import difflib

import pytest

from mmjax import rewards
from mmjax.rewards.choice import parse_choice
from mmjax.rewards.counting import parse_count
from mmjax.rewards.ocr import normalise_text


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("**C**", "C"),
        ("The answer is B", "B"),
        ("answer: (c)", "C"),
        ("The correct answer is option D.", "D"),
        ("I think A is wrong, so the answer is D.", "D"),  # last statement
        ("the answer is c.", "C"),
        ("the answer is a cat", None),  # lowercase "a" mid-sentence is an article
        ("(B) a cat on a mat", "B"),
        ("(b) Closed", "B"),  # MMVP's lower-case option marker
        ("a cat (b) here", None),  # mid-sentence lower case in parentheses: not a marker
        ("C. the red one", "C"),
        ("A cat, so (C) fits", "C"),
        ("A cat sits. I see B", "B"),  # "A cat", "I see": words, not options
        ("Option E", "E"),
        ("no letter here", None),
        ("", None),
    ],
)
def test_parse_choice(answer, letter):
    assert parse_choice(answer) == letter


def test_choice_reward_table():
    completions = ["<answer>(B)</answer>", "<answer>b</answer>", "<answer>C</answer>", "The answer is B",
                   "<answer>The answer is A</answer> ... B", "nothing"]
    targets = ["B", "(B)", "B", "B. a dog", "B", "B"]
    assert rewards.get("accuracy_choice")(completions, targets) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_choice_boxed_container():
    fn = rewards.get("accuracy_choice", container="boxed")
    assert fn(["<think>x</think> \\boxed{D}", "<answer>D</answer>"], ["D", "A"]) == [1.0, 0.0]


def test_ocr_normalisation():
    assert normalise_text("  Hello,\n  WORLD!! ") == "hello world"
    assert normalise_text("«Straße»—café, don't") == "strassecafé dont"  # punctuation removed, not spaced


@pytest.mark.parametrize(
    "answer, target, expected",
    [
        ("Hello,  World!", "hello world", 1.0),  # normalised exact
        ("STOP", "stop sign ahead", 1.0),  # substring of the target
        ("the sign says stop now", "stop", 1.0),  # target inside the answer
        ("help", "hello", 1.0),  # ratio 2*3/9 = 0.667
        ("abcd", "abxy", 1.0),  # ratio 2*2/8 = 0.5, the threshold itself
        ("abcde", "abxyz", 0.0),  # ratio 2*2/10 = 0.4
        ("wxyz", "abcd", 0.0),
        ("!!!", "abc", 0.0),  # nothing left after normalisation
        ("", "abc", 0.0),
    ],
)
def test_ocr_table(answer, target, expected):
    assert rewards.get("accuracy_ocr")([f"<answer>{answer}</answer>"], [target]) == [expected]


def test_ocr_ratio_matches_difflib_and_options():
    assert difflib.SequenceMatcher(None, "abcde", "abxyz").ratio() == pytest.approx(0.4)
    assert rewards.get("accuracy_ocr", min_ratio=0.4)(["<answer>abcde</answer>"], ["abxyz"]) == [1.0]
    no_substring = rewards.get("accuracy_ocr", allow_substring=False)
    assert no_substring(["<answer>stop</answer>"], ["stop sign ahead here"]) == [0.0]  # ratio 8/24
    assert rewards.get("accuracy_ocr")(["Total: 42"], ["total 42"]) == [1.0]  # no container: whole text


@pytest.mark.parametrize(
    "answer, count",
    [
        ("3", "3"),
        ("There are Five cats and 3 dogs", "5"),  # first count, words included
        ("12 apples and three pears", "12"),
        ("3.5", "3"),
        ("-2", "2"),
        ("007", "7"),
        ("twenty", "20"),
        ("someone", None),  # "one" inside a word is not a count
        ("none", None),
        ("", None),
    ],
)
def test_parse_count(answer, count):
    assert parse_count(answer) == count


def test_count_reward_table():
    completions = ["<answer>3</answer>", "<answer>three</answer>", "<answer>I count 4</answer>", "3",
                   "<answer>0</answer>", "<answer>many</answer>"]
    targets = [3, "3", "<answer>4</answer>", 3, "zero", 2]
    assert rewards.get("accuracy_count")(completions, targets) == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    # The released reward reads only the container; the option reads the whole text too.
    assert rewards.get("accuracy_count", fallback_to_text=True)(["3"], [3]) == [1.0]


@pytest.mark.parametrize("name, target", [("accuracy_choice", "none"), ("accuracy_count", "many"),
                                          ("accuracy_ocr", "?!"), ("accuracy_ocr", ""), ("accuracy_choice", None),
                                          ("accuracy_count", [3])])
def test_unreadable_targets_warn(name, target, caplog):
    assert rewards.get(name)(["<answer>B</answer>"], [target]) == [0.0]
    assert any(r.levelname == "WARNING" and "bad target" in r.getMessage() for r in caplog.records)
