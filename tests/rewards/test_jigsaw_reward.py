"""Tiered jigsaw reward, hand-computed against SPEC 1.5 and the released code's options."""

import dataclasses

import numpy as np
import pytest

from mmjax import rewards
from mmjax.rewards import jigsaw
from mmjax.rewards.repetition import has_repetition

TARGET9 = [7, 3, 9, 1, 5, 2, 8, 4, 6]
# Rotating the first four entries leaves exactly positions 5..9 right (SPEC's example).
FIVE_RIGHT = [3, 9, 1, 7, 5, 2, 8, 4, 6]
NONE_RIGHT = TARGET9[1:] + TARGET9[:1]


def think(answer: str, container: str = "answer") -> str:
    return f"<think>compare the edges</think>{rewards.wrap_answer(answer, container)}"


def csv(order) -> str:
    return ",".join(map(str, order))


@pytest.mark.parametrize(
    "completion, expected",
    [
        (think(csv(TARGET9)), 0.2 + 1.0),
        (think(csv(FIVE_RIGHT)), 0.2 + 0.2 * 5 / 9),  # SPEC: 0.2 + 0.111
        (think(" 3, 9 ,1,7, 5,2,8,4,6 "), 0.2 + 0.2 * 5 / 9),  # whitespace around items
        (think(csv(NONE_RIGHT)), 0.2),  # valid permutation, nothing in place
        (think("7,3,9,1,5,2,8,4,4"), 0.2),  # 8 right but a duplicate: not a permutation
        (think("7,3,9,1,5,2,8,4"), 0.2),  # 8 right but length 8
        (think("7,3,9,1,5,2,8,4,10"), 0.2),  # out of range
        (think("7 3 9 1 5 2 8 4 6"), 0.2),  # not comma-separated
        (think("[7,3,9,1,5,2,8,4,6]"), 0.2),  # brackets are not part of the format
        (f"<answer>{csv(TARGET9)}</answer>", 0.0),  # no think: format wrong, total 0
        (think(csv(TARGET9)) + " extra", 0.0),  # trailing text: format wrong, total 0
    ],
)
def test_paper_default_table(completion, expected):
    (value,) = rewards.get("jigsaw")([completion], [TARGET9])
    assert value == pytest.approx(expected, abs=1e-12)


def test_partial_credit_counts_positions():
    target = [2, 1, 4, 3]
    # 2x2 grid (K=4), 2 of 4 in place: paper gives partial credit, released code does not.
    completion = think("2,1,3,4")
    assert rewards.get("jigsaw")([completion], [target]) == pytest.approx([0.2 + 0.2 * 2 / 4])
    assert rewards.get("jigsaw", partial_min_pieces=5)([completion], [target]) == pytest.approx([0.2])
    k5 = [1, 2, 3, 4, 5]
    assert rewards.get("jigsaw", partial_min_pieces=5)([think("1,2,3,5,4")], [k5]) == pytest.approx(
        [0.2 + 0.2 * 3 / 5])


def test_gamma_and_format_score_options():
    fn = rewards.get("jigsaw", gamma=0.5, format_score=0.1)
    assert fn([think(csv(FIVE_RIGHT))], [TARGET9]) == pytest.approx([0.1 + 0.5 * 5 / 9])


REPEATED = "\n".join(["I will now look at the tiles again carefully."] * 4)  # 9 words, run of 4


def test_released_code_preset():
    fn = rewards.get("jigsaw", **rewards.JIGSAW_PRESETS["code"])
    boxed = f"<think>\n{REPEATED}\n</think>\nThe order is \\boxed{{{csv(TARGET9)}}}."
    plain = f"<think>short</think>The order is \\boxed{{{csv(FIVE_RIGHT)}}}."
    assert fn([boxed, plain, think(csv(TARGET9))], [TARGET9] * 3) == pytest.approx(
        [0.2 + 1.0 - 0.5, 0.2 + 0.2 * 5 / 9, 0.0])  # <answer> is the wrong container here


def test_repetition_penalty_not_applied_when_format_wrong():
    fn = rewards.get("jigsaw", repetition_penalty=-0.5)
    assert fn([REPEATED], [TARGET9]) == [0.0]


def test_no_think_variant():
    fn = rewards.get("jigsaw", think=False)
    assert fn([csv(TARGET9), " 3,9,1,7,5,2,8,4,6\n", think(csv(TARGET9))], [TARGET9] * 3) == pytest.approx(
        [1.0, 0.2 * 5 / 9, 0.0])
    with_penalty = rewards.get("jigsaw", think=False, repetition_penalty=-0.5)
    assert with_penalty([REPEATED + "\n" + csv(TARGET9)], [TARGET9]) == pytest.approx([-0.5])


@pytest.mark.parametrize("target", ["7,3,9,1,5,2,8,4,6", "[7, 3, 9, 1, 5, 2, 8, 4, 6]", np.array(TARGET9),
                                    tuple(TARGET9)])
def test_target_forms(target):
    assert rewards.get("jigsaw")([think(csv(FIVE_RIGHT))], [target]) == pytest.approx([0.2 + 0.2 * 5 / 9])


@pytest.mark.parametrize("target", [None, "", "a,b", 3, [1.5, 2], [True, False], {"a": 1}, np.array(3), [], [1, 1],
                                    [0, 1], "2,3"])
def test_bad_target_scores_zero_and_warns(target, caplog):
    assert rewards.get("jigsaw")([think("1,2")], [target]) == [0.0]
    assert any("bad target" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_exact_solve_rate_reward():
    completions = [think(csv(TARGET9)), think(csv(FIVE_RIGHT)), f"<answer>{csv(TARGET9)}</answer>"]
    assert rewards.get("jigsaw_exact")(completions, [TARGET9] * 3) == [1.0, 0.0, 0.0]
    assert rewards.get("jigsaw_exact", think=False)([csv(TARGET9)], [TARGET9]) == [1.0]


def test_score_parts():
    score = jigsaw.jigsaw_score(think(csv(FIVE_RIGHT)), TARGET9)
    assert (score.format, score.accuracy, score.penalty, score.exact) == (0.2, pytest.approx(0.2 * 5 / 9), 0.0, False)


@pytest.mark.parametrize(
    "text, expected",
    [
        (REPEATED, True),  # 4 consecutive > 3
        ("\n".join(["I will now look at the tiles again carefully."] * 3), False),  # run of 3
        ("\n".join(["Check the tiles again now."] * 10), False),  # 5 words < 7
        ("\n\n".join(["I will now look at the tiles again carefully."] * 4), True),  # blank lines skipped
        ("\nok\n".join(["I will now look at the tiles again carefully."] * 4), False),  # short line breaks run
        ("\n".join(["One two three four five six seven", "ONE two three four five six seven  "] * 2), True),
    ],
)
def test_has_repetition(text, expected):
    assert has_repetition(text) is expected
    assert rewards.get("repetition")([text]) == [-0.5 if expected else 0.0]


# ---- JigsawOptions: the one place the options and their defaults are written --------------

PAPER_OPTIONS = {"container": "answer", "gamma": 0.2, "format_score": 0.2, "partial_min_pieces": 0,
                 "repetition_penalty": 0.0, "repetition_min_words": 7, "repetition_max_run": 3, "think": True,
                 "parser": "mmjax"}


def test_options_dataclass_is_the_rewards_options():
    assert dataclasses.asdict(rewards.JigsawOptions()) == PAPER_OPTIONS
    assert rewards.options("jigsaw") == PAPER_OPTIONS and list(rewards.options("jigsaw")) == list(PAPER_OPTIONS)
    assert rewards.options("jigsaw_exact") == {k: PAPER_OPTIONS[k] for k in ("container", "think", "parser")}
    with pytest.raises(TypeError, match=r"no option\(s\) \['gamma'\]"):
        rewards.get("jigsaw_exact", gamma=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rewards.JigsawOptions().gamma = 0.5


@pytest.mark.parametrize("preset", sorted(rewards.JIGSAW_PRESETS))
def test_presets_as_options_and_as_keywords_agree(preset):
    opts = rewards.JigsawOptions(**rewards.JIGSAW_PRESETS[preset])
    boxed = f"<think>\n{REPEATED}\n</think>\nThe order is \\boxed{{{csv(FIVE_RIGHT)}}}."
    completions = [boxed, think(csv(FIVE_RIGHT)), think(csv(TARGET9))]
    want = [jigsaw.jigsaw_score(c, TARGET9, opts).total for c in completions]
    assert rewards.get("jigsaw", **rewards.JIGSAW_PRESETS[preset])(completions, [TARGET9] * 3) == want
    assert [jigsaw.jigsaw_score(c, TARGET9, **rewards.JIGSAW_PRESETS[preset]).total for c in completions] == want


def test_score_keywords_override_the_options():
    text = csv(FIVE_RIGHT)
    assert jigsaw.jigsaw_score(text, TARGET9, think=False) == jigsaw.jigsaw_score(
        text, TARGET9, rewards.JigsawOptions(think=False))
    base = rewards.JigsawOptions(think=False, gamma=0.5)
    assert jigsaw.jigsaw_score(text, TARGET9, base, gamma=1.0).accuracy == pytest.approx(5 / 9)
    assert base.gamma == 0.5  # the override leaves the given options as they were


def test_options_are_checked_and_other_keywords_ignored():
    with pytest.raises(ValueError, match="needs container='boxed'"):
        rewards.get("jigsaw", parser="released")(["x"], [TARGET9])
    with pytest.raises(ValueError, match="needs container='boxed'"):
        rewards.JigsawOptions(parser="released").check()
    fn = rewards.get("jigsaw", gamma=0.5)
    assert fn([think(csv(FIVE_RIGHT))], [TARGET9], image_id=[7]) == pytest.approx([0.2 + 0.5 * 5 / 9])
