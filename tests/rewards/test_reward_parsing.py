"""Containers, answer extraction and the think/answer format rule (SPEC 1.4)."""

import pytest

from mmjax.rewards import parsing


@pytest.mark.parametrize(
    "text, container, expected",
    [
        ("<think>a</think><answer>3,1,2</answer>", "answer", "3,1,2"),
        ("<answer> x </answer> then <answer>\n y \n</answer>", "answer", "y"),  # last block, stripped
        ("<answer>x</answer> <answer>unclosed", "answer", None),  # last tag unclosed
        ("no container", "answer", None),
        ("<answer></answer>", "answer", ""),
        (r"so \boxed{\frac{1}{2}}.", "boxed", r"\frac{1}{2}"),
        (r"\boxed{1} and \boxed{2}", "boxed", "2"),  # last box wins
        (r"\boxed{1} and \boxed{2", "boxed", "1"),  # truncated last box skipped
        (r"\boxed{\{1,2\}}", "boxed", r"\{1,2\}"),  # escaped braces are content
        (r"\boxed{a{b}c}", "boxed", "a{b}c"),
        (r"\boxed{}", "boxed", ""),
        ("<answer>3</answer>", "boxed", None),
    ],
)
def test_extract_answer(text, container, expected):
    assert parsing.extract_answer(text, container) == expected


@pytest.mark.parametrize(
    "text, container, ok",
    [
        ("<think>a</think><answer>b</answer>", "answer", True),
        ("  \n<think>\nstep 1\nstep 2\n</think>\n\n<answer>\n5\n</answer>\n ", "answer", True),
        ("<think></think><answer></answer>", "answer", True),  # empty parts allowed
        ("<think>a</think>b</think><answer>c</answer>", "answer", True),  # last </think> closes
        ("Sure! <think>a</think><answer>b</answer>", "answer", False),  # text before <think>
        ("<think>a</think><answer>b</answer> done", "answer", False),  # text after </answer>
        ("<think>a</think> so: <answer>b</answer>", "answer", False),  # text between
        ("<think>a</think><answer>b</answer><answer>c</answer>", "answer", False),  # two blocks
        ("<think>a<answer>b</answer>", "answer", False),  # no </think>
        ("<think>a</think>", "answer", False),
        ("<think>a</think><answer>b", "answer", False),
        ("<answer>b</answer>", "answer", False),
        (r"<think>a</think>The answer is \boxed{5}.", "boxed", True),
        (r"<think>a</think>\boxed{5}", "boxed", True),
        (r"<think>a</think>\boxed{5", "boxed", False),  # unbalanced
        (r"<think>a \boxed{5}</think> no box after", "boxed", False),  # box only inside think
        (r"\boxed{5}", "boxed", False),
        ("<think>a</think><answer>5</answer>", "boxed", False),
    ],
)
def test_think_format_ok(text, container, ok):
    assert parsing.think_format_ok(text, container) is ok


@pytest.mark.parametrize("container", sorted(parsing.CONTAINERS))
def test_wrapped_answer_round_trips_and_passes_format(container):
    wrapped = parsing.wrap_answer("3, 1, 2", container)
    assert parsing.extract_answer(wrapped, container) == "3, 1, 2"
    assert parsing.think_format_ok(f"<think>reasoning</think>{wrapped}", container)


def test_instructions_name_their_container():
    assert "<answer> </answer>" in parsing.CONTAINERS["answer"]
    assert "\\boxed{}" in parsing.CONTAINERS["boxed"]
    assert all("<think> </think>" in text for text in parsing.CONTAINERS.values())


def test_unknown_container_is_an_error():
    with pytest.raises(ValueError, match="unknown answer container 'json'"):
        parsing.extract_answer("x", "json")
