"""Synthetic generators (answers checked against pixels) and QA prompts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mmjax.data import prompts, qa, synthetic
from mmjax.data.skips import Skipped
from mmjax import containers


@pytest.mark.parametrize("background", ["photos", "plain"])
def test_shapes_vqa_answers_match_the_drawn_pixels(background):
    source = synthetic.ShapesVqaSource(12, seed=4, size=(160, 200), background=background)
    tasks = set()
    for index in range(len(source)):
        row = source[index]
        image, shapes = row["images"][0], row["extra"]["shapes"]
        for shape in shapes:  # metadata agrees with the pixels
            np.testing.assert_array_equal(image[shape["row"], shape["col"]],
                                          synthetic.COLOURS[shape["colour"]])
        question = row["prompt"]
        tasks.add(row["task"])
        if row["task"] == "counting":
            colour = re.search(r"How many (\w+) shapes", question).group(1)
            assert row["solution"] == str(sum(s["colour"] == colour for s in shapes))
        else:
            options = dict(re.findall(r"^([A-D])\. (\w+)$", question, re.MULTILINE))
            answer = options[row["solution"]]
            kind = re.search(r"the (circle|square|triangle)", question).group(1)
            (target,) = [s for s in shapes if s["kind"] == kind]
            if "colour" in question:
                assert answer == target["colour"]
            else:
                assert answer == ("left" if target["col"] < 100 else "right")
    assert tasks == {"counting", "choice"}
    assert source[3]["solution"] == synthetic.ShapesVqaSource(12, seed=4, size=(160, 200),
                                                              background=background)[3]["solution"]


def test_moving_shapes_video_gets_brighter_with_time():
    frames = synthetic.moving_shapes_video(seconds=5, fps=4, size=(32, 48))
    assert frames.shape == (20, 32, 48, 3)
    red = frames[:, 0, 0, 0].astype(int)
    assert red[0] == 20 and red[-1] == 220 and np.all(np.diff(red) > 0)


def test_rgbd_scene_depth_ranges():
    rgb, depth = synthetic.rgbd_scene(np.random.default_rng(0), (120, 160))
    assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160)
    valid = depth[depth > 0]
    assert valid.min() >= 0.5 and valid.max() <= 9.0 and (depth == 0).sum() == 100
    np.testing.assert_array_equal(depth[-1], 1.0)  # boxes and the dropout never reach the bottom


def test_text_to_content_splits_placeholders():
    content = prompts.text_to_content("Compare <image> and <image>: same?", 2)
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert content[0]["text"] == "Compare " and content[-1]["text"] == ": same?"
    assert [p["type"] for p in prompts.text_to_content("What is it?", 1)] == ["image", "text"]
    with pytest.raises(ValueError, match="1 <image>"):
        prompts.text_to_content("<image> and", 2)


@pytest.mark.parametrize("container", [containers.ANSWER, containers.BOXED])
def test_qa_sample_adds_the_matching_system_prompt(container):
    row = synthetic.ShapesVqaSource(1, size=(96, 96), background="plain")[0]
    sample = qa.QaSample(container=container).map(row)
    system, user = sample["messages"]
    assert system["role"] == "system" and containers.CONTAINERS[container] in system["content"][0]["text"]
    assert user["content"][0] == {"type": "image"}
    assert sample["container"] == container and sample["solution"] == row["solution"]
    own_system = {**row, "messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "<image>Hi"}]}
    kept = qa.QaSample().map(own_system)["messages"]
    assert kept[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}


def test_qa_rows_that_cannot_be_prompted_are_skipped():
    row = {"images": [np.zeros((28, 28, 3), np.uint8)] * 2, "prompt": "<image> only one",
           "solution": "x", "where": "f.jsonl:2"}
    skipped = qa.QaSample().map(row)
    assert isinstance(skipped, Skipped) and skipped.reason == "bad_prompt"
    assert qa.QaSample().map({**row, "solution": None}).reason == "missing_field"


def test_graded_colour_rows_vary_in_difficulty_and_keep_the_answer_in_the_pixels():
    size = (56, 56)
    plain = synthetic.ColourChoiceSource(300, seed=2, size=size, background="plain")
    graded = synthetic.ColourChoiceSource(300, seed=2, size=size, background="plain", graded=True)
    seen = set()
    for index in range(len(graded)):
        row, before = graded[index], plain[index]
        image, extra = row["images"][0], row["extra"]
        *distractors, main = extra["shapes"]
        # The plain task's draws come first: the same background (one colour, in a corner no
        # shape covers) and the same shape, colour and centre; only size, fill and company change.
        covered = [*extra["shapes"], {**main, "radius": 56 // 3}]  # and the plain row's larger shape
        corner = next(p for p in [(0, 0), (0, 55), (55, 0), (55, 55)]
                      if all(max(abs(p[0] - s["row"]), abs(p[1] - s["col"])) > s["radius"] + 2 for s in covered))
        np.testing.assert_array_equal(image[corner], before["images"][0][corner])
        assert main["colour"] == before["extra"]["colour"]
        np.testing.assert_array_equal(before["images"][0][main["row"], main["col"]],  # the same centre
                                      synthetic.COLOURS[main["colour"]])
        assert row["solution"] == before["solution"] and row["prompt"].startswith(
            "<image>" + synthetic.ColourChoiceSource.GRADED_QUESTION)
        # The fill is the background blended toward the colour by `contrast`; the pixels show it.
        want = [round(float(b) + extra["contrast"] * (c - float(b)))
                for b, c in zip(image[corner], synthetic.COLOURS[main["colour"]])]
        def drawn_in(shape, rgb):  # some pixel of the shape's box has that colour (outlines are black)
            box = image[max(0, shape["row"] - shape["radius"]):shape["row"] + shape["radius"] + 1,
                        max(0, shape["col"] - shape["radius"]):shape["col"] + shape["radius"] + 1]
            return bool((box == np.asarray(rgb)).all(-1).any())
        assert extra["fill"] == want and drawn_in(main, want)
        assert main["radius"] == max(3, round(56 // 3 * extra["scale"]))
        for d in distractors:  # smaller, another colour, full contrast
            assert d["radius"] < main["radius"] and d["colour"] != main["colour"]
            assert drawn_in(d, synthetic.COLOURS[d["colour"]]), (index, d)
        assert extra["distractors"] == len(distractors)
        seen.add((extra["scale"], extra["contrast"], extra["distractors"]))
    # Every combination of the three factors occurs (27 of them in 300 rows).
    assert len(seen) == len(synthetic.GRADED_SCALES) * len(synthetic.GRADED_CONTRASTS) * len(
        synthetic.GRADED_DISTRACTORS)
    assert plain[5]["where"] == "ColourChoiceSource(seed=2)[5]" and "graded" in graded[5]["where"]


def test_config_data_colour_graded_reaches_the_source():
    from mmjax.jobs import build, recipe
    config = recipe.base()
    config.data.source, config.data.num_samples, config.data.image_size = "colour_choice", 4, (56, 56)
    assert not build.source(config.data).graded and "scale" not in build.source(config.data)[0]["extra"]
    config.data.colour_graded = True
    row = build.source(config.data)[0]
    assert row["extra"]["scale"] in synthetic.GRADED_SCALES and row["where"].endswith("graded)[0]")
