"""Rewards stay bounded on adversarial policy text: linear parsing, time-boxed math checks.

Timings are ratios only: 4x the input against 1x, or a batch against its per-row budget
and the pool's start-up measured in the same test.
"""

import gc
import math
import signal
import time

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


class _TooSlow(BaseException):
    """Not an Exception, so the rewards' own error handling cannot swallow it."""


def _cpu_seconds(call, guard_seconds):
    """CPU time of one call (a busy shared host delays it, not this); GC paused.

    ``guard_seconds`` of wall time stop the call (a quadratic parser on a big input).
    """

    def stop(signum, frame):
        raise _TooSlow

    previous = signal.signal(signal.SIGALRM, stop)
    gc.disable()
    signal.setitimer(signal.ITIMER_REAL, guard_seconds)
    start = time.process_time()
    try:
        call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        gc.enable()
        signal.signal(signal.SIGALRM, previous)
    return time.process_time() - start


def _cost_ratio(cheap, costly, rounds=5, guard_factor=40.0):
    """Fastest ``costly`` over fastest ``cheap``, timed in turns so both see the same host."""
    best_cheap = best_costly = math.inf
    for _ in range(rounds):
        best_cheap = min(best_cheap, _cpu_seconds(cheap, guard_seconds=1e6))
        try:
            best_costly = min(best_costly, _cpu_seconds(costly, guard_seconds=guard_factor * best_cheap + 0.05))
        except _TooSlow:
            return math.inf
    return best_costly / best_cheap


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
def test_boxed_rewards_scale_linearly(name, opts, answer, target, expected):
    """A complete box followed by thousands of truncated ones (a policy can emit this)."""
    opts = dict(opts)
    task = opts.pop("task", None)
    fn = rewards.get(name, **opts)
    columns = {} if task is None else {"task": task}

    def text(repeats):
        return f"<think>x</think>\\boxed{{{answer}}}" + "\\boxed{" * repeats

    small, big = text(BASE_REPEATS), text(4 * BASE_REPEATS)
    assert fn([small], [target], **columns) == [expected]
    assert fn([big], [target], **columns) == [expected]
    ratio = _cost_ratio(lambda: fn([small], [target], **columns), lambda: fn([big], [target], **columns))
    assert ratio <= 8, f"{name}: 4x the input took {ratio:.1f}x the time"


def test_ocr_fuzzy_match_costs_about_one_read_of_the_answer():
    """A long rambling answer against a short target: no len(answer) x len(target) matching."""
    target = "the quick brown fox jumps over the lazy dog " * 3  # under difflib's autojunk size
    answer = "a quick brown cat naps under the lazy sun " * 2000
    fn = rewards.get("accuracy_ocr")
    assert fn([f"<answer>{answer}</answer>"], [target]) == [0.0]
    ratio = _cost_ratio(lambda: ocr.normalise_text(answer), lambda: fn([f"<answer>{answer}</answer>"], [target]))
    assert ratio <= 5, f"scoring took {ratio:.1f}x the time of normalising the answer"


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


def _start_pool(workers):
    """Seconds from no pool to a first answer: the start-up a batch may add to its budget."""
    math_check._pool.close()
    start = time.perf_counter()
    assert math_check.check_batch([("1", "1.0")], MathBudget(row_seconds=5.0, workers=workers)) == [True]
    return time.perf_counter() - start


def test_adversarial_batch_is_bounded_by_the_row_budget():
    budget, workers = 0.3, 2
    startup = _start_pool(workers)
    rewards.pop_metrics()
    completions, targets, expected = [], [], []
    for bomb, (answer, target, value) in zip(ADVERSARIAL, NORMAL):
        completions += [f"<answer>{bomb}</answer>", f"<answer>{answer}</answer>"]
        targets += ["3", target]
        expected += [0.0, value]
    options = {"accuracy_math": {"timeout_seconds": budget, "workers": workers}}
    combined = rewards.combine({"accuracy_math": 1.0}, options)
    start = time.perf_counter()
    out = combined(completions, targets)
    took = time.perf_counter() - start
    # Unbounded, each bomb alone held the main thread for up to 6 x 5 s.
    assert took < 20 * budget + startup, f"{len(completions)} rows took {took:.2f} s"
    assert out.per_function["accuracy_math"] == expected
    assert out.metrics == {"accuracy_math/math_timeouts": len(ADVERSARIAL), "accuracy_math/math_checks": 16}
    assert rewards.pop_metrics() == {}  # combine's counts are in its output only


def test_hung_worker_is_killed_and_replaced(monkeypatch, caplog):
    budget = MathBudget(row_seconds=3.0, workers=2)
    assert math_check.check_batch([("1", "1.0")], budget) == [True]
    before = list(math_check._pool.workers)
    # The parent gives up at 0.2 s, long before the worker's own 3 s timer: as if stuck in C.
    monkeypatch.setattr(math_check, "_kill_after", lambda row_seconds: 0.2)
    start = time.perf_counter()
    assert math_check.check_batch([(ADVERSARIAL[0], "3")], budget) == [None]
    assert time.perf_counter() - start < budget.row_seconds
    killed = [w for w in before if w.poll() is not None]
    assert len(killed) == 1 and killed[0] not in math_check._pool.workers
    assert len(math_check._pool.workers) == 2
    assert "killed and replaced" in caplog.text
    monkeypatch.undo()
    assert math_check.check_batch([("\\frac{1}{2}", "0.5"), ("0.5", "1/3")], budget) == [True, False]


def test_batch_deadline_scores_unfinished_rows_as_timeouts():
    row, batch, workers = 0.3, 0.5, 2
    assert math_check.check_batch([("1", "1.0")], MathBudget(workers=workers)) == [True]
    rewards.pop_metrics()
    bombs = ADVERSARIAL * 2
    fn = rewards.get("accuracy_math", timeout_seconds=row, batch_timeout_seconds=batch, workers=workers)
    start = time.perf_counter()
    scores = fn([f"<answer>{b}</answer>" for b in bombs] + ["<answer>7</answer>"], ["3"] * len(bombs) + ["7"])
    took = time.perf_counter() - start
    assert scores == [0.0] * len(bombs) + [1.0]  # the exact-string row needs no math-verify
    # Without the deadline the rows would take len(bombs) * row / workers = 2.4 s.
    assert took < 3 * batch, f"took {took:.2f} s"
    assert rewards.pop_metrics() == {"accuracy_math/math_timeouts": len(bombs), "accuracy_math/math_checks": len(bombs)}
    # Workers busy at the deadline were replaced: no late reply reaches the next batch.
    pairs = [(a, t) for a, t, _ in NORMAL]
    assert math_check.check_batch(pairs, MathBudget(row_seconds=2.0, workers=workers)) == [e == 1.0 for *_, e in NORMAL]


def test_mixed_accuracy_checks_math_rows_together():
    rewards.pop_metrics()
    fn = rewards.get("accuracy", math_timeout_seconds=0.3)
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
