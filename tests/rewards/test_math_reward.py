"""Math accuracy: math-verify with exact-string fallback, on and off the main thread."""

import concurrent.futures

import pytest

from mmjax import rewards
from mmjax.rewards import math_check

CASES = [
    # (completion, target, expected): truth known by hand; math-verify is the checker.
    ("<think>..</think><answer>\\frac{3}{4}</answer>", "0.75", 1.0),
    ("<answer>0.75</answer>", "<answer>3/4</answer>", 1.0),  # target container stripped
    ("<answer>2\\sqrt{2}</answer>", "\\sqrt{8}", 1.0),  # bare LaTeX, read inside $...$
    ("<answer>x = 2</answer>", "2", 1.0),
    ("<answer>0.5</answer>", "1/3", 0.0),
    ("The answer is 12", 12, 1.0),  # no container: whole text, as released
    ("<answer>12</answer> and 13 later", "13", 0.0),  # container wins over the text
    ("<answer>foo bar</answer>", "foo bar", 1.0),  # exact-string fallback (no math)
    ("<answer>cat</answer>", "dog", 0.0),
    ("<answer></answer>", "0", 0.0),
    ("<answer>\\pi/2</answer>", "\\frac{\\pi}{2}", 1.0),
]


@pytest.mark.parametrize("completion, target, expected", CASES)
def test_math_table(completion, target, expected):
    assert rewards.get("accuracy_math")([completion], [target]) == [expected]


def test_boxed_container():
    fn = rewards.get("accuracy_math", container="boxed")
    assert fn(["<think>a</think> so \\boxed{\\frac{1}{2}}.", "\\boxed{2} then \\boxed{3}"], ["0.5", "3"]) == [1.0, 1.0]


def test_long_answers_only_compared_as_strings():
    long_sum = "+".join(["1"] * 30)  # 59 chars, equals 30
    fn = rewards.get("accuracy_math", max_chars=20)
    assert fn([f"<answer>{long_sum}</answer>", f"<answer>{long_sum}</answer>"], ["30", long_sum]) == [0.0, 1.0]
    assert rewards.get("accuracy_math")([f"<answer>{long_sum}</answer>"], ["30"]) == [1.0]


def test_same_results_off_the_main_thread():
    """Off the main thread math-verify's signal alarms cannot work; the worker process answers."""
    completions = [c for c, _, _ in CASES]
    targets = [t for _, t, _ in CASES]
    fn = rewards.get("accuracy_math", timeout_seconds=2)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        off_main = pool.submit(fn, completions, targets).result()
    assert off_main == [e for _, _, e in CASES]


def test_worker_past_deadline_is_killed_and_restarted(monkeypatch, caplog):
    def off_main(pred, gold):
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(math_check.math_equal, pred, gold, 1).result()

    assert off_main("1", "1.0") is True  # worker up and warm
    worker = math_check._worker
    # The comparison of 10^(10^10) runs until the worker's 1 s alarm; a 0.2 s deadline is
    # shorter, so the caller gives up, kills the worker and counts the answer wrong.
    monkeypatch.setattr(math_check, "_deadline", lambda timeout_seconds: 0.2)
    assert off_main("10^{10^{10}}", "3") is False
    assert math_check._worker is None and worker.poll() is not None
    assert "restarting it" in caplog.text
    monkeypatch.undo()
    assert off_main("\\frac{1}{2}", "0.5") is True  # a fresh worker serves the next check


def test_runaway_expression_times_out_as_wrong():
    # 10^(10^10) has ten billion digits: math-verify's own alarm stops the comparison.
    assert rewards.get("accuracy_math", timeout_seconds=1)(["<answer>10^{10^{10}}</answer>"], ["3"]) == [0.0]


def test_timeout_must_be_whole_seconds():
    with pytest.raises(ValueError, match="timeout_seconds must be >= 1"):
        math_check.math_equal("1", "1", 0)
