"""Registry, per-task accuracy, format reward and weighted combination."""

import logging
import math

import pytest

from mmjax import rewards
from mmjax.rewards import registry

GOOD = "<think>ok</think><answer>3/4</answer>"
NO_THINK = "<answer>3/4</answer>"


def test_names():
    assert set(rewards.names()) >= {"format", "jigsaw", "jigsaw_exact", "repetition", "accuracy", "accuracy_math", "accuracy_choice",
                                    "accuracy_ocr", "accuracy_count", "accuracy_grounding"}


def test_get_validates_names_and_options():
    with pytest.raises(KeyError, match="unknown reward 'jigsw'"):
        rewards.get("jigsw")
    with pytest.raises(TypeError, match=r"no option\(s\) \['gama'\]"):
        rewards.get("jigsaw", gama=0.1)
    assert rewards.options("format") == {"container": "answer"}


def test_register_refuses_a_second_function_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        rewards.register("format")(lambda completions, targets=None, **kw: [0.0] * len(completions))


def test_format_reward_and_extra_columns_ignored():
    fn = rewards.get("format")
    assert fn([GOOD, NO_THINK, "<think>a</think>\\boxed{1}"], None, image_id=[1, 2, 3]) == [1.0, 0.0, 0.0]
    assert rewards.get("format", container="boxed")(["<think>a</think>\\boxed{1}"]) == [1.0]


def test_combine_weights_and_per_function_values():
    combined = rewards.combine({"format": 0.5, "accuracy_math": 1.0})
    out = combined([GOOD, NO_THINK, "<think>ok</think><answer>1</answer>"], ["0.75"] * 3)
    assert out.per_function == {"format": [1.0, 0.0, 1.0], "accuracy_math": [1.0, 1.0, 0.0]}
    assert out.total == [1.5, 1.0, 0.5]


def test_combine_options_and_validation():
    combined = rewards.combine({"jigsaw": 1.0, "format": 0.0}, {"jigsaw": {"container": "boxed"}})
    out = combined(["<think>a</think>\\boxed{2,1}"], [[2, 1]])
    assert out.total == [pytest.approx(1.2)] and out.per_function["format"] == [0.0]
    with pytest.raises(KeyError, match="unknown reward"):
        rewards.combine({"nope": 1.0})
    with pytest.raises(ValueError, match="no weight"):
        rewards.combine({"format": 1.0}, {"jigsaw": {}})
    with pytest.raises(ValueError, match="finite number"):
        rewards.combine({"format": math.nan})
    with pytest.raises(ValueError, match="at least one"):
        rewards.combine({})


def test_accuracy_dispatches_on_task_column():
    completions = ["<answer>0.75</answer>", "<answer>(B)</answer>", "<answer>Hello world</answer>",
                   "<answer>3 cats</answer>", "<answer>[0, 0, 10, 5]</answer>"]
    targets = ["3/4", "B", "hello, world", 3, [0, 0, 10, 10]]
    tasks = ["math", "choice", "ocr", "count", "grounding"]
    assert rewards.get("accuracy")(completions, targets, task=tasks) == pytest.approx([1, 1, 1, 1, 0.5])
    assert rewards.get("accuracy")(["<answer>B</answer>"] * 2, ["B", "C"], task="choice") == [1.0, 0.0]
    with pytest.raises(ValueError, match="needs a task column"):
        rewards.get("accuracy")(["x"], ["y"])
    with pytest.raises(ValueError, match="column 'task' has 1 rows"):
        rewards.get("accuracy")(["x", "y"], ["x", "y"], task=["math"])


def test_unknown_task_scores_zero_with_warning(caplog):
    assert rewards.get("accuracy")(["<answer>B</answer>"], ["B"], task=["vqa"]) == [0.0]
    assert "unknown task 'vqa'" in caplog.text


def test_batch_length_mismatch_is_a_caller_error():
    with pytest.raises(ValueError, match="2 completions but 1 targets"):
        rewards.get("jigsaw")(["a", "b"], [[1]])


def test_score_rows_turns_failures_into_logged_zeros(caplog):
    def score(text, target):
        if text == "boom":
            raise RuntimeError("bug")
        return math.inf if text == "inf" else 1.0

    with caplog.at_level(logging.WARNING, logger="mmjax.rewards"):
        values = registry.score_rows("probe", score, ["ok", "boom", "inf", 7], [None] * 4)
    assert values == [1.0, 0.0, 0.0, 1.0]  # a non-str completion is scored as ""
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("ERROR", "reward 'probe' failed on row 1; scored 0.0") in messages
    assert ("ERROR", "reward 'probe' gave inf on row 2; scored 0.0") in messages
    assert ("WARNING", "reward 'probe': row 3 completion is int, not str; scored as ''") in messages
