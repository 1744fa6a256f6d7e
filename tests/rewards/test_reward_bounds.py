"""Rewards stay right on adversarial policy text: parsing past thousands of truncated boxes,
math checks cut by their budgets in worker processes.

The behaviour only: how fast (linear parsing, batches within their budgets, a hung worker
given up early) is measured by tools/bench/rewards.py against references in the same run.
"""

import math
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmjax import rewards
from mmjax.rewards import MathBudget, math_check, ocr, parsing

# --- \boxed{...} parsing ----------------------------------------------------------------


def _rescanning_last_boxed(text):
    """The definition: from the last ``\\boxed{`` back, the first whose content balances."""
    end = len(text)
    while (start := text.rfind("\\boxed{", 0, end)) >= 0:
        depth, i = 1, start + len("\\boxed{")
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + len("\\boxed{"):i]
            i += 1
        end = start
    return None


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"\boxed{a\boxed{b}}", "b"),  # the inner box starts last
        (r"\boxed{a\boxed{b}", "b"),  # outer box never closes
        (r"\boxed{ok}" + "\\boxed{" * 200, "ok"),  # many truncated boxes after a complete one
        (r"}}\boxed{x}}}", "x"),  # stray closers around it
        (r"\\boxed{3}", "3"),  # an escaped backslash before the box
        (r"\boxed{\}", None),  # the only closer is escaped
        (r"\boxed{a\\}b}", "a\\\\"),  # \\ is an escaped backslash, so the } after it closes
        ("\\boxed{x\\", None),  # a lone trailing backslash
        (r"\boxed{\boxed{}", ""),
        (r"\boxed{1}\boxed{{2}\boxed{3}", "3"),
        (r"\boxed{1}\boxed{{2}\boxed{3", "1"),  # \boxed{{2}... and \boxed{3 never close
        (r"\boxed{a}\boxed", "a"),
    ],
)
def test_last_boxed_hand_cases(text, expected):
    assert parsing.last_boxed(text) == expected
    assert _rescanning_last_boxed(text) == expected


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(["\\boxed{", "\\", "{", "}", "a", "\\{", "\\}", "boxed{", "\\boxed"]), max_size=16)
       .map("".join))
def test_last_boxed_matches_the_rescanning_definition(text):
    assert parsing.last_boxed(text) == _rescanning_last_boxed(text)


# (reward, options, boxed answer, target, expected value)
BOXED_REWARDS = [
    ("format", {"container": "boxed"}, "1", None, 1.0),
    ("jigsaw", {"container": "boxed"}, "2,1,3", [2, 1, 3], 1.2),  # mmjax reading: the complete box counts
    # The released reading (code preset): the unclosed last box reads "None"; the format holds.
    ("jigsaw", rewards.JIGSAW_PRESETS["code"], "2,1,3", [2, 1, 3], 0.2),
    ("accuracy_math", {"container": "boxed"}, "3/4", "3/4", 1.0),
    ("accuracy_choice", {"container": "boxed"}, "B", "B", 1.0),
    ("accuracy_ocr", {"container": "boxed"}, "hello world", "hello world", 1.0),
    ("accuracy_count", {"container": "boxed"}, "3", "3", 1.0),
    ("accuracy_grounding", {"container": "boxed"}, "[0, 0, 10, 10]", [[0, 0, 10, 10]], 1.0),
    ("accuracy", {"container": "boxed", "task": "choice"}, "B", "B", 1.0),
]
BASE_REPEATS = 20_000  # the rescanning parser needs minutes for this; linear: ~20 ms


@pytest.mark.parametrize("name, opts, answer, target, expected", BOXED_REWARDS, ids=[r[0] for r in BOXED_REWARDS])
def test_boxed_rewards_read_the_complete_box_before_thousands_of_truncated_ones(name, opts, answer, target, expected):
    """A complete box followed by thousands of truncated ones (a policy can emit this).

    The cost at 4x the input against 1x (linear: ~4x) is tools/bench/rewards.py's to measure.
    """
    opts = dict(opts)
    task = opts.pop("task", None)
    fn = rewards.get(name, **opts)
    columns = {} if task is None else {"task": task}

    def text(repeats):
        return f"<think>x</think>\\boxed{{{answer}}}" + "\\boxed{" * repeats

    small, big = text(BASE_REPEATS), text(4 * BASE_REPEATS)
    assert fn([small], [target], **columns) == [expected]
    assert fn([big], [target], **columns) == [expected]


def test_ocr_fuzzy_match_of_a_long_answer_against_a_short_target():
    """A long rambling answer against a short target (its cost against one read of the answer:
    tools/bench/rewards.py)."""
    target = "the quick brown fox jumps over the lazy dog " * 3  # under difflib's autojunk size
    answer = "a quick brown cat naps under the lazy sun " * 2000
    fn = rewards.get("accuracy_ocr")
    assert fn([f"<answer>{answer}</answer>"], [target]) == [0.0]
    # The target inside the long answer: the substring rule reads it; without that rule the
    # fuzzy ratio (at most 2 * 132 / (84000 + 2 * 132) = 0.003) is far below 0.5.
    assert fn([f"<answer>{answer}{target}</answer>"], [target]) == [1.0]
    assert not ocr.ocr_match(answer + target, target, allow_substring=False)


def test_ocr_bounds_keep_the_fuzzy_rule():
    assert ocr.ocr_match("the quick brown fax", "the quick brown fox")  # ratio ~0.95
    assert not ocr.ocr_match("completely different words here", "fox")
    assert ocr.ocr_match("ab", "abcd", allow_substring=False)  # ratio 2*2/6 = 0.67 >= 0.5
    assert not ocr.ocr_match("ab", "abcdefgh", allow_substring=False)  # 2*2/10 = 0.4


# --- math-verify under a budget ------------------------------------------------------------

# Each runs for seconds to forever in sympy; none can finish within the budgets below.
ADVERSARIAL = [
    "2^{2^{2^{2^{2^{2}}}}}", "10^{10^{10}}", "9^{9^{9^{9}}}", "3^{3^{3^{3^{3}}}}",
    "(10^{10})!", "(10^{100})!", "10000000!", "2^{2^{40}}",
]
NORMAL = [  # (answer, target, expected): quick for math-verify
    ("\\frac{3}{4}", "0.75", 1.0), ("2\\sqrt{2}", "\\sqrt{8}", 1.0), ("x = 2", "2", 1.0), ("0.5", "1/3", 0.0),
    ("\\pi/2", "\\frac{\\pi}{2}", 1.0), ("2^{10}", "1024", 1.0), ("\\binom{10}{3}", "120", 1.0),
    ("\\frac{1}{2}", "0.5", 1.0),
]


def _no_check_in_this_process(pred, gold, timeout_seconds):
    raise AssertionError(f"math-verify ran in the test process on {pred!r}")


def test_adversarial_rows_time_out_in_workers_and_normal_rows_score(monkeypatch):
    """Each bad row is cut by its row budget in a worker, never run in this process (unbounded,
    each held the main thread for up to 6 x 5 s); the wall time against the budget is
    tools/bench/rewards.py's to measure."""
    # 1 s per row: the normal rows take 1-50 ms on a warm worker (20x margin on a loaded host,
    # where 0.3 s was seen to cut one); each bad row runs past 3 s (measured: all 8 timed out).
    budget, workers = 1.0, 2
    monkeypatch.setattr(math_check, "verify_in_process", _no_check_in_this_process)
    assert math_check.check_batch([("1", "1.0")], MathBudget(row_seconds=5.0, workers=workers)) == [True]
    rewards.pop_metrics()
    completions, targets, expected = [], [], []
    for bomb, (answer, target, value) in zip(ADVERSARIAL, NORMAL):
        completions += [f"<answer>{bomb}</answer>", f"<answer>{answer}</answer>"]
        targets += ["3", target]
        expected += [0.0, value]
    options = {"accuracy_math": {"timeout_seconds": budget, "workers": workers}}
    combined = rewards.combine({"accuracy_math": 1.0}, options)
    out = combined(completions, targets)
    assert out.per_function["accuracy_math"] == expected
    assert out.metrics == {"accuracy_math/math_timeouts": len(ADVERSARIAL), "accuracy_math/math_checks": 16}
    assert rewards.pop_metrics() == {}  # combine's counts are in its output only


def test_hung_worker_is_killed_and_replaced(monkeypatch, caplog):
    budget = MathBudget(row_seconds=3.0, workers=2)
    assert math_check.check_batch([("1", "1.0")], budget) == [True]
    before = list(math_check._pool.workers)
    # The parent gives up at 0.2 s, long before the worker's own 3 s timer: as if stuck in C.
    monkeypatch.setattr(math_check, "_kill_after", lambda row_seconds: 0.2)
    assert math_check.check_batch([(ADVERSARIAL[0], "3")], budget) == [None]
    killed = [w for w in before if w.poll() is not None]
    assert len(killed) == 1 and killed[0] not in math_check._pool.workers
    # Killed by the parent (SIGKILL), not ended by its own 3 s timer (which replies, and lives on).
    assert killed[0].poll() == -signal.SIGKILL
    assert len(math_check._pool.workers) == 2
    assert "killed and replaced" in caplog.text and "past a 3.00 s budget (row 0)" in caplog.text
    monkeypatch.undo()
    assert math_check.check_batch([("\\frac{1}{2}", "0.5"), ("0.5", "1/3")], budget) == [True, False]


def test_batch_deadline_scores_unfinished_rows_as_timeouts(monkeypatch):
    row, batch, workers = 0.3, 0.5, 2
    assert math_check.check_batch([("1", "1.0")], MathBudget(workers=workers)) == [True]
    sent = []  # (worker, answer) of every row sent
    send = math_check._Worker.send

    def counting_send(worker, pred, gold, budget_seconds):
        sent.append((worker, pred))
        return send(worker, pred, gold, budget_seconds)

    monkeypatch.setattr(math_check._Worker, "send", counting_send)
    rewards.pop_metrics()
    bombs = ADVERSARIAL * 2
    fn = rewards.get("accuracy_math", timeout_seconds=row, batch_timeout_seconds=batch, workers=workers)
    scores = fn([f"<answer>{b}</answer>" for b in bombs] + ["<answer>7</answer>"], ["3"] * len(bombs) + ["7"])
    assert scores == [0.0] * len(bombs) + [1.0]  # the exact-string row needs no math-verify
    assert rewards.pop_metrics() == {"accuracy_math/math_timeouts": len(bombs), "accuracy_math/math_checks": len(bombs)}
    # Every row timed out (none answered), so each took its worker at least `row` seconds: by the
    # 0.5 s deadline a worker finished at most 1 row and started a 2nd. The other rows were never
    # sent (without the deadline all 16 are, taking len(bombs) * row / workers = 2.4 s).
    assert 1 <= len(sent) <= workers * (math.floor(batch / row) + 1) == 4, len(sent)
    # A worker that had a row always had one in flight at the deadline (a freed worker takes the
    # next row at once): each was replaced, so no late reply reaches the next batch. (A worker
    # still starting up from an earlier test gets no row.)
    busy = {worker for worker, _ in sent}
    assert busy and all(w not in math_check._pool.workers and w.poll() is not None for w in busy)
    monkeypatch.undo()
    pairs = [(a, t) for a, t, _ in NORMAL]
    assert math_check.check_batch(pairs, MathBudget(row_seconds=2.0, workers=workers)) == [e == 1.0 for *_, e in NORMAL]


def test_mixed_accuracy_checks_math_rows_together():
    rewards.pop_metrics()
    fn = rewards.get("accuracy", math_timeout_seconds=1.0)  # as above: the normal row well inside it
    answers = ["(10^{10})!", "3", "\\frac{1}{2}", "B"]
    scores = fn([f"<answer>{a}</answer>" for a in answers], ["3", "3", "0.5", "B"],
                task=["math", "count", "math", "choice"])
    assert scores == [0.0, 1.0, 1.0, 1.0]
    assert rewards.pop_metrics() == {"accuracy/math_timeouts": 1, "accuracy/math_checks": 2}
    assert rewards.pop_metrics() == {}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"row_seconds": 0}, "row_seconds"),
        ({"row_seconds": math.nan}, "row_seconds"),
        ({"batch_seconds": 0}, "batch_seconds"),
        ({"workers": 0}, "workers"),
        ({"workers": 1.5}, "workers"),
    ],
)
def test_budget_is_validated(fields, message):
    with pytest.raises(ValueError, match=f"MathBudget.{message}"):
        MathBudget(**fields)


def test_default_budget_is_sub_second_and_used_by_the_rewards():
    assert MathBudget().row_seconds < 1.0
    assert rewards.options("accuracy_math")["timeout_seconds"] == MathBudget().row_seconds
    assert rewards.options("accuracy")["math_timeout_seconds"] == MathBudget().row_seconds
    with pytest.raises(ValueError, match="MathBudget.row_seconds"):
        rewards.get("accuracy_math", timeout_seconds=-1)(["<answer>1</answer>"], ["2"])
