"""Box parsing and area-weighted IoU grounding reward, hand-computed."""

import json

import pytest

from mmjax import rewards
from mmjax.rewards.boxes import Box, iou, parse_boxes


def qwen(*items) -> str:
    """Qwen2.5-VL's grounding output: a JSON list in a ```json fence."""
    body = json.dumps([{"bbox_2d": box, "label": label} for box, label in items])
    return f"<answer>```json\n{body}\n```</answer>"


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[{"bbox_2d": [1, 2, 3, 4], "label": " Cat "}]', [Box("cat", 1, 2, 3, 4)]),
        ('```json\n{"bbox_2d": [1, 2, 3, 4]}\n```', [Box(None, 1, 2, 3, 4)]),
        ("[1, 2, 3.5, 4]", [Box(None, 1, 2, 3.5, 4)]),
        ("[[1, 2, 3, 4], [5, 6, 7, 8]]", [Box(None, 1, 2, 3, 4), Box(None, 5, 6, 7, 8)]),
        ("{'bbox_2d': [1, 2, 3, 4], 'label': 'dog'}", [Box("dog", 1, 2, 3, 4)]),  # Python literal
        # Truncated JSON: the complete objects are still read.
        ('[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7, 8], "label": "b"}, {"bbox_2d": [9,',
         [Box("a", 1, 2, 3, 4), Box("b", 5, 6, 7, 8)]),
        ("The cat is at [10, 20, 30, 40] in the image.", [Box(None, 10, 20, 30, 40)]),
        ("[3, 2, 1, 4]", []),  # x2 < x1
        ("[1, 2, 1, 4]", []),  # zero width
        ("[1, 2, 1e999, 4]", []),  # not finite
        ('[{"bbox_2d": [1, 2, 3]}]', []),
        ("no boxes", []),
    ],
)
def test_parse_boxes(text, expected):
    assert parse_boxes(text) == expected


def test_a_completion_that_is_odd_python_parses_without_warnings():
    """"0x1for" and "1if" are SyntaxWarnings to ast.literal_eval; a reward parses model text, so it stays quiet."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert parse_boxes("0x1for [0, 0, 10, 10]") == [Box(None, 0.0, 0.0, 10.0, 10.0)]
        assert parse_boxes("[1if 2]") == []
    assert [w for w in caught if issubclass(w.category, SyntaxWarning)] == []


def test_iou_hand_computed():
    a = Box(None, 0, 0, 10, 10)
    assert iou(a, Box(None, 0, 0, 10, 5)) == pytest.approx(0.5)
    assert iou(a, Box(None, 5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou(a, Box(None, 10, 0, 20, 10)) == 0.0  # touching edges
    assert iou(a, a) == 1.0


CAT = ([0, 0, 10, 10], "cat")  # area 100
DOG = ([20, 20, 40, 40], "dog")  # area 400


@pytest.mark.parametrize(
    "completion, expected_all, expected_matched",
    [
        (qwen(CAT, DOG), 1.0, 1.0),
        (qwen(DOG, CAT), 1.0, 1.0),  # order does not matter
        (qwen(CAT, ([20, 20, 40, 30], "dog")), (100 * 1 + 400 * 0.5) / 500, (100 * 1 + 400 * 0.5) / 500),
        (qwen(CAT), 100 / 500, 1.0),  # a missed dog costs its area share, or nothing (released)
        (qwen(CAT, DOG, ([50, 50, 60, 60], "cat")), 1.0, 1.0),  # extra predictions cost nothing
        (qwen(([0, 0, 10, 10], "dog"), ([20, 20, 40, 40], "cat")), 0.0, 0.0),  # labels swapped
        (qwen(([0, 0, 10, 10], "CAT"), DOG), 1.0, 1.0),  # labels compared case-folded
        ("<answer>[0, 0, 10, 10]</answer>", 100 / 500, 1.0),  # unlabelled: one group, matches the cat
        ("<answer>no idea</answer>", 0.0, 0.0),
    ],
)
def test_grounding_table(completion, expected_all, expected_matched):
    target = [{"bbox_2d": CAT[0], "label": "cat"}, {"bbox_2d": DOG[0], "label": "dog"}]
    assert rewards.get("accuracy_grounding")([completion], [target]) == [pytest.approx(expected_all)]
    matched = rewards.get("accuracy_grounding", denominator="matched")
    assert matched([completion], [target]) == [pytest.approx(expected_matched)]


def test_highest_iou_first_matching():
    # Height 10 everywhere, so IoU is the 1-D interval IoU in x.
    # p1=[5,14]: IoU 5/14 with g1=[0,10], 9/10 with g2=[4,14]; p2=[-6,4]: 4/16 with g1, 0 with g2.
    # Matching targets in input order would give g1 p1 and leave g2 empty: 100*(5/14)/200 = 0.179.
    # Highest IoU first gives g2 p1 and g1 p2.
    target = [[0, 0, 10, 10], [4, 0, 14, 10]]
    completion = "<answer>[[5, 0, 14, 10], [-6, 0, 4, 10]]</answer>"
    assert rewards.get("accuracy_grounding")([completion], [target]) == [pytest.approx((100 * 0.9 + 100 * 0.25) / 200)]


def test_target_forms():
    completion = "<answer>[0, 0, 10, 5]</answer>"
    for target in ([0, 0, 10, 10], "[0, 0, 10, 10]", "<answer>[0, 0, 10, 10]</answer>", {"bbox_2d": [0, 0, 10, 10]},
                   ((0, 0, 10, 10),)):
        assert rewards.get("accuracy_grounding")([completion], [target]) == [pytest.approx(0.5)]


def test_bad_options_and_targets(caplog):
    with pytest.raises(ValueError, match="denominator"):
        rewards.get("accuracy_grounding", denominator="gt")(["x"], [[0, 0, 1, 1]])
    assert rewards.get("accuracy_grounding")(["[0, 0, 1, 1]"], [[1, 1, 0, 0]]) == [0.0]
    assert any("no valid box" in r.getMessage() for r in caplog.records)
