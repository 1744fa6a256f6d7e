"""Every reward is total: any text and any target give a finite float in its range.

Besides the range, no row may reach the registry's safety net (an ERROR log): that would
mean a reward raised or returned a non-finite value, i.e. a bug the net only hides.
"""

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmjax import rewards

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "{", "}", "\\", ",", " ", "\n", "1", "2", "3", "9",
    "10", "007", "[", "]", "[0, 0, 10, 10]", '{"bbox_2d": [1, 2, 3, 4], "label": "cat"}', '"label": "', "```json",
    "(B)", "The answer is ", "answer: ", "three", "$", "\\frac{1}{2}", "^", "1e999", "-", ".", "I will look again now ok",
]
TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=14).map("".join),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
TARGET = st.one_of(
    st.recursive(
        SCALAR,
        lambda children: st.lists(children, max_size=5)
        | st.dictionaries(st.sampled_from(["bbox_2d", "bbox", "label", "x"]), children, max_size=3),
        max_leaves=10,
    ),
    st.integers(1, 9).flatmap(lambda k: st.permutations(list(range(1, k + 1)))),  # real jigsaw targets
    st.lists(st.integers(-5, 20), min_size=4, max_size=4),  # box-like
)

# (reward, options, lowest, highest)
CONFIGS = [
    ("format", {}, 0.0, 1.0),
    ("format", {"container": "boxed"}, 0.0, 1.0),
    ("repetition", {}, -0.5, 0.0),
    ("jigsaw", {}, 0.0, 1.2),
    ("jigsaw", rewards.JIGSAW_PRESETS["code"], -0.5, 1.2),
    ("jigsaw", {"think": False, "repetition_penalty": -0.5}, -0.5, 1.0),
    ("jigsaw_exact", {"container": "boxed"}, 0.0, 1.0),
    ("accuracy_math", {}, 0.0, 1.0),
    ("accuracy_choice", {"container": "boxed"}, 0.0, 1.0),
    ("accuracy_ocr", {}, 0.0, 1.0),
    ("accuracy_count", {}, 0.0, 1.0),
    ("accuracy_grounding", {}, 0.0, 1.0),
    ("accuracy_grounding", {"denominator": "matched", "container": "boxed"}, 0.0, 1.0),
]


class _ErrorRecords(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def error_records():
    handler = _ErrorRecords()
    logger = logging.getLogger("mmjax.rewards")
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


def _check(values, n, lo, hi, errors):
    assert len(values) == n
    for v in values:
        assert type(v) is float and math.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9, v
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("name, opts, lo, hi", CONFIGS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIGS)])
def test_reward_is_total(name, opts, lo, hi, error_records):
    fn = rewards.get(name, **opts)

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.lists(st.tuples(TEXT, TARGET), min_size=1, max_size=3))
    def run(rows):
        error_records.clear()
        values = fn([c for c, _ in rows], [t for _, t in rows])
        _check(values, len(rows), lo, hi, error_records)

    run()


def test_accuracy_dispatch_is_total(error_records):
    fn = rewards.get("accuracy")
    task = st.one_of(st.sampled_from(["math", "choice", "ocr", "count", "grounding"]), SCALAR)

    @settings(max_examples=60, deadline=None, database=None)
    @given(st.lists(st.tuples(TEXT, TARGET, task), min_size=1, max_size=3))
    def run(rows):
        error_records.clear()
        values = fn([c for c, _, _ in rows], [t for _, t, _ in rows], task=[k for _, _, k in rows])
        _check(values, len(rows), 0.0, 1.0, error_records)

    run()


def test_combined_total_is_the_weighted_sum(error_records):
    combined = rewards.combine({"format": 0.5, "jigsaw": 2.0, "accuracy_count": -1.0})

    @settings(max_examples=40, deadline=None, database=None)
    @given(st.lists(st.tuples(TEXT, TARGET), min_size=1, max_size=3))
    def run(rows):
        out = combined([c for c, _ in rows], [t for _, t in rows])
        for i, total in enumerate(out.total):
            expected = sum(w * out.per_function[name][i] for name, w in combined.weights.items())
            assert total == pytest.approx(expected, abs=1e-12)
        _check(out.total, len(rows), -1.0, 0.5 + 2.4, error_records)

    run()
