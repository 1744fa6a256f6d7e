"""mode=eval: benchmark readers, hand-checked scores per benchmark and category, the job end to end.

The fixtures are a few rows per format with synthetic images. Scores are checked on given
answer strings (a random model answers nothing right), each expected value worked out by
hand in the comments; the job itself runs once on the tiny random model.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
from PIL import Image

from configs import eval as eval_config
from mmjax.eval import benchmarks as bench_lib
from mmjax.eval import metrics as metrics_lib
from mmjax.eval import runner as runner_lib
from mmjax.jobs import eval as eval_job
from mmjax.jobs import build


def _image(path, seed: int, size=(56, 56)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _write(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


MATHVISTA = [
    {"pid": "1", "question": "Find the angle.", "image": "images/0.png", "choices": ["130°", "145°", "160°"],
     "answer": "145°", "question_type": "multi_choice", "answer_type": "text",
     "metadata": {"category": "math-targeted-vqa", "task": "geometry problem solving",
                  "skills": ["geometry reasoning", "algebraic reasoning"]}},
    {"pid": "2", "question": "Is the sky blue?", "image": "images/1.png", "choices": ["yes", "no"], "answer": "no",
     "question_type": "multi_choice", "answer_type": "text",
     "metadata": {"category": "general-vqa", "task": "visual question answering", "skills": ["scientific reasoning"]}},
    {"pid": "3", "question": "What fraction is shaded?", "image": "images/2.png", "choices": None, "answer": "0.5",
     "question_type": "free_form", "answer_type": "float", "precision": 1.0,
     "metadata": {"category": "math-targeted-vqa", "task": "math word problem",
                  "skills": ["arithmetic reasoning", "algebraic reasoning"]}},
    {"pid": "4", "question": "How many birds?", "image": "images/3.png", "choices": None, "answer": "7",
     "question_type": "free_form", "answer_type": "integer",
     "metadata": {"category": "general-vqa", "task": "visual question answering", "skills": ["numeric commonsense"]}},
]
OCRBENCH = [
    {"id": 0, "dataset_name": "IIIT5K", "image_path": "images/0.png", "question": "what is written in the image?",
     "answers": ["CUMBERLAND"], "type": "Regular Text Recognition"},
    {"id": 1, "dataset_name": "textVQA", "image_path": "images/1.png", "question": "what number is on the bus?",
     "answers": ["42", "forty-two"], "type": "Scene Text-centric VQA"},
    {"id": 2, "dataset_name": "textVQA", "image_path": "images/2.png", "question": "what does the sign say?",
     "answers": "STOP", "type": "Scene Text-centric VQA"},
]
MMSTAR = [
    {"index": 0, "question": "What is shown?\nOptions: A: a cat, B: a dog", "image": "images/0.png", "answer": "A",
     "category": "coarse perception", "l2_category": "image scene and topic"},
    {"index": 1, "question": "Which colour?\nOptions: A: red, B: blue, C: green", "image": "images/1.png",
     "answer": "C", "category": "coarse perception", "l2_category": "image style & quality"},
    {"index": 2, "question": "What is 2+2?\nOptions: A: 3, B: 4", "image": "images/2.png", "answer": "B",
     "category": "math", "l2_category": "numeric commonsense & calculation"},
]
MMVP = [
    {"index": i + 1, "question": q, "options": "(a) Open (b) Closed", "answer": a, "image": f"images/{i % 4}.png",
     "pair_id": str(i // 2 + 1), "category": cat}
    for i, (q, a, cat) in enumerate([
        ("Is the door open?", "(a)", "State"), ("Is the door open?", "(b)", "State"),
        ("Is the eye open?", "(a)", "State"), ("Is the eye open?", "(b)", "State"),
        ("Is the bird facing left?", "(a)", "Orientation"), ("Is the bird facing left?", "(b)", "Orientation"),
    ])
]
DA2K = [
    {"id": "indoor/0", "image": "images/0.png", "point1": [10, 12], "point2": [40, 44], "closer_point": "point1",
     "category": "indoor"},
    {"id": "outdoor/1", "image": "images/1.png", "point1": [20, 20], "point2": [30, 50], "closer_point": "point2",
     "category": "outdoor"},
]
JIGSAW = [{"id": "j0", "image": "images/0.png", "rows": 2, "cols": 2},
          {"id": "j1", "image": "images/1.png", "rows": 2, "cols": 2}]
QA_CHOICE = "<image>What colour is the shape?\nOptions:\nA. red\nB. blue\nAnswer with the option letter."
QA = [{"id": "q0", "images": ["images/0.png"], "prompt": QA_CHOICE, "solution": "B", "task": "choice",
       "groups": {"scale": 0.3, "contrast": 1.0}},
      {"id": "q1", "image": "images/1.png", "prompt": "What is 1/2 as a decimal?", "solution": "0.5", "task": "math",
       "category": "arithmetic"}]
_NO_IMAGES = {f"image_{k}": None for k in range(1, 8)}
MMMU = [
    # Two placeholders, image 2 first; option A names image 1 again (text "(image 1)"); image_3 is
    # named by no placeholder: passed last. Options as a Python list literal, as released.
    {**_NO_IMAGES, "id": "validation_Art_Theory_1", "question": "Compare <image 2> with <image 1>. Which is older?",
     "options": "['<image 1>', '<image 2>', 'Both the same']", "answer": "B", "question_type": "multiple-choice",
     "image_1": "images/0.png", "image_2": "images/1.png", "image_3": "images/2.png", "subfield": "Art History",
     "topic_difficulty": "Medium", "img_type": "['Paintings']"},
    {**_NO_IMAGES, "id": "validation_Accounting_2", "question": "<image 1> What is the total?",
     "options": ["$10", "$20", "$30", "$40"], "answer": "D", "question_type": "multiple-choice",
     "image_1": "images/3.png", "subfield": "Financial Accounting", "topic_difficulty": "Easy"},
    # Open: a list literal of accepted answers; then a plain one.
    {**_NO_IMAGES, "id": "validation_Math_3", "question": "<image 1> x^2 = 9. What is x?", "options": "[]",
     "answer": "['3', '-3']", "question_type": "open", "image_1": "images/2.png", "subfield": "Algebra",
     "topic_difficulty": "Easy"},
    {**_NO_IMAGES, "id": "validation_Math_4", "question": "What fraction of <image 1> is shaded?", "options": "[]",
     "answer": "0.5", "question_type": "open", "image_1": "images/1.png", "subfield": "Geometry",
     "topic_difficulty": "Hard"},
]
_VS = {"category": "VS", "subcategory": "chart", "set_id": "0"}
_VD = {"category": "VD", "subcategory": "ocr", "set_id": "1"}
HALLUSIONBENCH = [  # the released layout; VS figure 0 is the question asked without a figure
    {**_VS, "figure_id": "0", "question_id": "0", "question": "Is the Eiffel Tower in Paris?", "gt_answer": "1",
     "filename": None, "visual_input": "0"},
    {**_VS, "figure_id": "1", "question_id": "0", "question": "Is the Eiffel Tower in Paris?", "gt_answer": "0",
     "filename": "images/0.png", "visual_input": "2"},
    {**_VS, "figure_id": "0", "question_id": "1", "question": "Is the Eiffel Tower taller than 100 m?",
     "gt_answer": 1, "filename": None, "visual_input": "0"},
    {**_VS, "figure_id": "1", "question_id": "1", "question": "Is the Eiffel Tower taller than 100 m?",
     "gt_answer": 1, "filename": "images/0.png", "visual_input": "2"},
    {**_VD, "figure_id": "0", "question_id": "0", "question": "Does the sign say STOP?", "gt_answer": "1",
     "gt_answer_details": "Yes, it says STOP.", "filename": "images/1.png", "visual_input": "1"},
    {**_VD, "figure_id": "1", "question_id": "0", "question": "Does the sign say STOP?", "gt_answer": "0",
     "filename": "images/2.png", "visual_input": "2"},
    {**_VD, "figure_id": "0", "question_id": "1", "question": "Is the sign red?", "gt_answer": "1",
     "filename": "images/1.png", "visual_input": "1"},
]
FILES = {"mathvista": MATHVISTA, "ocrbench": OCRBENCH, "mmstar": MMSTAR, "mmvp": MMVP, "da2k": DA2K,
         "jigsaw": JIGSAW, "qa": QA, "mmmu": MMMU, "hallusionbench": HALLUSIONBENCH}


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    (root / "images").mkdir()
    for i in range(4):
        _image(root / "images" / f"{i}.png", seed=i)
    return root, {name: _write(root / f"{name}.jsonl", rows) for name, rows in FILES.items()}


def _read(paths, name):
    return bench_lib.read_benchmark(name, paths[name])


def _ans(text: str) -> str:
    return f"<think>looking</think><answer>{text}</answer>"


def _scored(items, texts):
    scores, counters = metrics_lib.score_items(items, texts)
    return metrics_lib.summarise(items, scores, counters), scores


# ---- readers -------------------------------------------------------------------------------------

def test_readers_follow_the_public_field_names(bench_dir):
    root, paths = bench_dir
    mv = _read(paths, "mathvista")
    assert [i.scorer for i in mv] == ["choice", "choice", "math", "math"]
    assert [i.gold for i in mv] == ["B", "B", "0.5", "7"]  # the choice text's letter; the free-form answer
    assert "(A) 130°\n(B) 145°\n(C) 160°" in mv[0].prompt
    assert "1 decimal place." in mv[2].prompt and "integer" in mv[3].prompt
    assert mv[0].groups["skill"] == ("geometry reasoning", "algebraic reasoning")
    assert _read(paths, "ocrbench")[1].accepted == ("42", "forty-two")
    mmvp = _read(paths, "mmvp")
    assert [i.gold for i in mmvp] == ["A", "B"] * 3  # "(a)" -> A
    assert "Options:\n(A) Open\n(B) Closed\n" in mmvp[0].prompt  # an echoed "(B) Closed" reads as B
    da2k = _read(paths, "da2k")
    assert [i.gold for i in da2k] == ["A", "B"] and da2k[0].points == ((10, 12), (40, 44))
    jig = _read(paths, "jigsaw")
    assert all(sorted(map(int, i.gold.split(","))) == [1, 2, 3, 4] for i in jig)
    # The rendered jigsaw shows the image's tiles in the order its target says.
    image = np.asarray(Image.open(jig[0].image_paths[0]).convert("RGB"))
    sample = bench_lib.render(jig[0], [image], bench_lib.ReadOptions())
    tiles = [image[:28, :28], image[:28, 28:], image[28:, :28], image[28:, 28:]]
    for piece, shown in enumerate(map(int, jig[0].gold.split(","))):
        np.testing.assert_array_equal(sample["images"][shown - 1], tiles[piece])
    # qa: the training layout's prompt as written (no instruction appended), its task's scorer.
    qa = _read(paths, "qa")
    assert [(i.scorer, i.gold, i.prompt) for i in qa] == [("choice", "B", QA_CHOICE), ("math", "0.5", QA[1]["prompt"])]
    assert qa[0].groups == {"scale": ("0.3",), "contrast": ("1.0",), "task": ("choice",)}
    assert qa[1].groups == {"task": ("math",), "category": ("arithmetic",)}
    assert qa[1].image_paths == (str(root / "images" / "1.png"),)  # `image` as well as `images`
    rendered = bench_lib.render(qa[0], [image], bench_lib.ReadOptions(), system_prompt=False)
    assert rendered["messages"] == [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": QA_CHOICE[len("<image>"):]}]}]
    # DA-2K: markers are drawn on the image; the prompt asks for A or B.
    marked = bench_lib.render(da2k[0], [image], bench_lib.ReadOptions())
    assert not np.array_equal(marked["images"][0], image) and "closer to the camera" in json.dumps(marked["messages"])


def test_mmmu_images_sit_where_their_placeholders_are(bench_dir):
    root, paths = bench_dir
    mmmu = _read(paths, "mmmu")
    assert [(i.scorer, i.gold, i.accepted) for i in mmmu] == [
        ("choice", "B", ("B",)), ("choice", "D", ("D",)), ("math", "3", ("3", "-3")), ("math", "0.5", ("0.5",))]
    first = mmmu[0]
    # image 2, then image 1 (the question's order), then the unnamed image 3
    assert first.image_paths == tuple(str(root / "images" / f"{i}.png") for i in (1, 0, 2))
    assert first.prompt == ("Compare <image> with <image>. Which is older?\n(A) (image 1)\n(B) (image 2)\n"
                            "(C) Both the same\n<image>\n" + bench_lib.CHOICE_INSTRUCTION)
    assert first.groups == {"subject": ("Art_Theory",), "subfield": ("Art History",), "topic_difficulty": ("Medium",),
                            "question_type": ("multiple-choice",)}
    assert mmmu[1].prompt.startswith("<image> What is the total?\n(A) $10\n") and mmmu[1].groups["subject"] == (
        "Accounting",)
    assert mmmu[2].prompt == "<image> x^2 = 9. What is x?\n" + bench_lib.MMMU_OPEN_INSTRUCTION  # no options shown
    images = [np.full((56, 56, 3), k, np.uint8) for k in range(3)]
    sample = bench_lib.render(first, images, bench_lib.ReadOptions(), system_prompt=False)
    image = {"type": "image"}
    assert sample["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Compare "}, image, {"type": "text", "text": " with "}, image,
        {"type": "text", "text": ". Which is older?\n(A) (image 1)\n(B) (image 2)\n(C) Both the same\n"}, image,
        {"type": "text", "text": "\n" + bench_lib.CHOICE_INSTRUCTION}]}]
    assert all(a is b for a, b in zip(sample["images"], images))  # in the order of the image parts


def test_hallusionbench_rows_with_and_without_their_figure(bench_dir):
    root, paths = bench_dir
    hb = _read(paths, "hallusionbench")
    assert [i.gold for i in hb] == ["yes", "no", "yes", "yes", "yes", "no", "yes"]
    assert [len(i.image_paths) for i in hb] == [0, 1, 0, 1, 1, 1, 1]
    assert hb[1].image_paths == (str(root / "images" / "0.png"),) and hb[0].image_sizes == ()
    assert hb[0].prompt == "Is the Eiffel Tower in Paris?\n" + bench_lib.YESNO_INSTRUCTION
    assert (hb[0].pair, hb[0].figure, hb[1].figure) == ("VS_chart_0_0", None, "VS_chart_0_1")
    assert hb[4].figure == "VD_ocr_1_0" and hb[4].id == "VD_ocr_1_0_0"
    # No image: a text-only user turn, no image parts.
    sample = bench_lib.render(hb[0], [], bench_lib.ReadOptions(), system_prompt=False)
    assert sample["images"] == [] and sample["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": hb[0].prompt}]}]
    # visual_input 0 drops a named figure too: the question is asked without it
    path = _write(root / "hb_named.jsonl", [dict(HALLUSIONBENCH[0], filename="images/0.png")])
    assert bench_lib.read_benchmark("hallusionbench", path)[0].image_paths == ()


def test_the_runner_answers_questions_without_images(bench_dir, tiny_model):
    _, paths = bench_dir
    c, tok, model = tiny_model
    hb = _read(paths, "hallusionbench")[:3]  # sorted by image count: a batch of two without images, then one with
    runner = runner_lib.Runner(model, tok, build.image_config(c), build.eval_runner_config(c))
    assert runner.cfg.batch_size == 2
    opts = bench_lib.ReadOptions()
    processed = runner._processed(hb[0], lambda item, images: bench_lib.render(item, images, opts))
    assert len(processed["inputs"]["image_grid_thw"]) == 0
    answers = runner.run(hb, lambda item, images: bench_lib.render(item, images, opts))
    assert len(answers) == 3 and all(a.num_tokens == c.eval.max_new_tokens or a.stopped for a in answers)


# ---- scores on given answers, hand-checked ----------------------------------------------------------

def test_mathvista_accuracy_per_category_and_skill(bench_dir):
    _, paths = bench_dir
    # row 1 right (B), row 2 wrong (A for B), row 3 right (1/2 = 0.5 by math-verify), row 4 wrong (8 for 7)
    summary, scores = _scored(_read(paths, "mathvista"), [_ans("B"), _ans("A"), _ans("\\frac{1}{2}"), _ans("8")])
    assert [s.correct for s in scores] == [1.0, 0.0, 1.0, 0.0]
    assert summary["metric"] == "accuracy" and summary["score"] == 0.5 and summary["n"] == 4
    by = summary["by"]
    assert {k: v["score"] for k, v in by["category"].items()} == {"general-vqa": 0.0, "math-targeted-vqa": 1.0}
    # algebraic reasoning: rows 1 and 3, both right; scientific: row 2 only, wrong
    assert by["skill"]["algebraic reasoning"] == {"score": 1.0, "n": 2}
    assert by["skill"]["scientific reasoning"] == {"score": 0.0, "n": 1}
    assert by["question_type"]["free_form"]["score"] == by["question_type"]["multi_choice"]["score"] == 0.5
    assert summary["metrics"]["accuracy_math/math_checks"] == 2  # the two free-form rows went to math-verify


def test_ocrbench_any_accepted_answer(bench_dir):
    _, paths = bench_dir
    # "cumberland": exact after case folding; the bare "the number is 42" contains "42"; "yield" is not "STOP"
    summary, _ = _scored(_read(paths, "ocrbench"), [_ans("cumberland"), "the number is 42", _ans("yield")])
    assert summary["score"] == pytest.approx(2 / 3) and summary["metrics"]["correct"] == 2
    assert summary["by"]["type"] == {"Regular Text Recognition": {"score": 1.0, "n": 1},
                                     "Scene Text-centric VQA": {"score": 0.5, "n": 2}}
    assert summary["by"]["dataset"]["textVQA"]["score"] == 0.5


def test_mmstar_letter_per_category(bench_dir):
    _, paths = bench_dir
    summary, scores = _scored(_read(paths, "mmstar"), [_ans("A"), _ans("(B)"), _ans("The answer is B")])
    assert [s.correct for s in scores] == [1.0, 0.0, 1.0]
    assert summary["score"] == pytest.approx(2 / 3)
    assert summary["by"]["category"] == {"coarse perception": {"score": 0.5, "n": 2}, "math": {"score": 1.0, "n": 1}}


def test_mmvp_pair_accuracy(bench_dir):
    _, paths = bench_dir
    # pair 1 both right; pairs 2 and 3 one right each: 4 of 6 questions, 1 of 3 pairs
    texts = [_ans("A"), _ans("(B) Closed"), _ans("A"), _ans("A"), _ans("B"), _ans("B")]
    summary, _ = _scored(_read(paths, "mmvp"), texts)
    assert summary["metric"] == "pair_accuracy" and summary["score"] == pytest.approx(1 / 3)
    assert summary["metrics"]["question_accuracy"] == pytest.approx(4 / 6) and summary["metrics"]["pairs"] == 3
    assert summary["by"]["category"] == {"Orientation": {"score": 0.0, "n": 1}, "State": {"score": 0.5, "n": 2}}


def test_mmmu_by_letter_and_math_verify_against_any_accepted_answer(bench_dir):
    _, paths = bench_dir
    # gold B, D, 3 or -3, 0.5: A wrong; D right; -3 right (the second accepted answer); 1/2 right by math-verify
    summary, scores = _scored(_read(paths, "mmmu"), [_ans("A"), _ans("(D)"), _ans("-3"), _ans("\\frac{1}{2}")])
    assert [s.correct for s in scores] == [0.0, 1.0, 1.0, 1.0]
    assert summary["metric"] == "accuracy" and summary["score"] == 0.75
    assert summary["by"]["question_type"] == {"multiple-choice": {"score": 0.5, "n": 2}, "open": {"score": 1.0, "n": 2}}
    assert summary["by"]["subject"]["Math"] == {"score": 1.0, "n": 2}
    # A wrong answer to the open list: neither 3 nor -3
    _, scores = _scored(_read(paths, "mmmu")[2:3], [_ans("9")])
    assert scores[0].correct == 0.0


def test_hallusionbench_question_figure_and_pair_accuracy(bench_dir):
    _, paths = bench_dir
    # HAND_CHECKED's answers: right, wrong, right, right, right, right, wrong (see there)
    summary, scores = _scored(_read(paths, "hallusionbench"), HAND_CHECKED["hallusionbench"][0])
    assert [s.correct for s in scores] == [1, 0, 1, 1, 1, 1, 0]
    assert [s.extracted for s in scores] == ["yes", "yes", "yes", "yes", "yes", "no", None]
    assert summary["metric"] == "question_accuracy" and summary["score"] == pytest.approx(5 / 7)
    m = summary["metrics"]
    assert (m["figure_accuracy"], m["figures"], m["correct_figures"]) == (pytest.approx(1 / 3), 3, 1)
    assert (m["pair_accuracy"], m["pairs"], m["correct_pairs"]) == (0.5, 4, 2)
    assert summary["by"]["category"] == {"VD": {"score": pytest.approx(2 / 3), "n": 3}, "VS": {"score": 0.75, "n": 4}}
    assert metrics_lib.parse_yes_no("No.") == "no" and metrics_lib.parse_yes_no("Nope") is None


def test_da2k_and_jigsaw_solve_rate(bench_dir):
    _, paths = bench_dir
    summary, _ = _scored(_read(paths, "da2k"), [_ans("A"), _ans("A")])  # right, then wrong (B is closer)
    assert summary["score"] == 0.5 and summary["by"]["category"]["indoor"]["score"] == 1.0
    jig = _read(paths, "jigsaw")
    # row 1 solved in format (reward 1.2); row 2 the right order but no <think>: not solved, reward 0
    summary, scores = _scored(jig, [_ans(jig[0].gold), jig[1].gold])
    assert summary["metric"] == "solve_rate" and summary["score"] == 0.5
    assert summary["metrics"]["mean_reward"] == pytest.approx(0.6)
    assert scores[0].extracted == jig[0].gold


# ---- malformed files: errors name the file and the row --------------------------------------------

@pytest.mark.parametrize("line,message", [
    ('{"index": 0, "question": "q", "image": "images/0.png", "answer": "A"}\n{"index": 1,', r":2: not valid JSON"),
    ('{"index": 0, "question": "q", "image": "images/0.png"}', r":1: missing field 'answer'"),
    ('{"index": 0, "question": "q", "image": "images/nope.png", "answer": "A"}',
     r":1: image .*nope.png does not exist"),
    ('{"index": 0, "question": "q", "image": "images/0.png", "answer": "maybe"}', r":1: field 'answer'.*no option"),
    ('[1, 2]', r":1: a row must be a JSON object"),
])
def test_a_malformed_row_is_an_error_naming_file_and_line(bench_dir, line, message):
    root, _ = bench_dir
    path = _write(root / "bad_mmstar.jsonl", [line])
    with pytest.raises(bench_lib.BenchmarkError, match="bad_mmstar.jsonl" + message):
        bench_lib.read_benchmark("mmstar", path)


def test_inconsistent_rows_and_missing_files(bench_dir):
    root, paths = bench_dir
    with pytest.raises(bench_lib.BenchmarkError, match=r"missing.jsonl: no such file"):
        bench_lib.read_benchmark("mmstar", str(root / "missing.jsonl"))
    with pytest.raises(bench_lib.BenchmarkError, match=r"pair_id '1' has 1 rows \(lines 1\)"):
        bench_lib.read_benchmark("mmvp", _write(root / "mmvp_odd.jsonl", MMVP[:1]))
    far = dict(DA2K[0], point2=[10, 99])
    with pytest.raises(bench_lib.BenchmarkError, match=r"da2k_far.jsonl:1: field 'point2'.*outside the 56x56"):
        bench_lib.read_benchmark("da2k", _write(root / "da2k_far.jsonl", [far]))
    wrong = dict(MATHVISTA[0], answer="150°")
    with pytest.raises(bench_lib.BenchmarkError, match=r"mv_bad.jsonl:1: field 'answer' = '150°' is not one of"):
        bench_lib.read_benchmark("mathvista", _write(root / "mv_bad.jsonl", [wrong]))
    with pytest.raises(bench_lib.BenchmarkError, match=r"qa_task.jsonl:1: field 'task' = 'grounding': a qa "
                                                      r"benchmark scores tasks \['choice', 'math', 'ocr'\]"):
        bench_lib.read_benchmark("qa", _write(root / "qa_task.jsonl", [dict(QA[0], task="grounding")]))
    two = dict(QA[0], prompt="<image><image>" + QA_CHOICE)
    with pytest.raises(bench_lib.BenchmarkError, match=r"qa_marks.jsonl:1: field 'prompt' has 3 <image> "
                                                      r"placeholders for 1 images"):
        bench_lib.read_benchmark("qa", _write(root / "qa_marks.jsonl", [two]))
    for bad, message in [
            (dict(MMMU[1], options="$10, $20"), r"field 'options' = \"\$10, \$20\" is not a list"),
            (dict(MMMU[0], image_2=None), r"field 'question' names <image 2> but field 'image_2' is null or missing"),
            (dict(MMMU[1], answer="E"), r"field 'answer' = 'E' is past the 4 options"),
            (dict(MMMU[1], question="<image> <image 1> What?"),
             r"the question or options hold a bare <image>.*: 2 <image> for 1 images")]:
        with pytest.raises(bench_lib.BenchmarkError, match=r"mmmu_bad.jsonl:2: " + message):
            bench_lib.read_benchmark("mmmu", _write(root / "mmmu_bad.jsonl", [MMMU[2], bad]))
    for bad, message in [(dict(HALLUSIONBENCH[0], gt_answer="yes"), r"field 'gt_answer' = 'yes', expected 0 .no."),
                         (dict(HALLUSIONBENCH[0], gt_answer=2), r"field 'gt_answer' = 2, expected"),
                         (dict(HALLUSIONBENCH[1], filename=None), r"missing field 'filename'"),
                         (HALLUSIONBENCH[0], r"question 'VS_chart_0_0_0' .* is also line 1")]:
        with pytest.raises(bench_lib.BenchmarkError, match=r"hb_bad.jsonl:2: " + message):
            bench_lib.read_benchmark("hallusionbench", _write(root / "hb_bad.jsonl", [HALLUSIONBENCH[0], bad]))
    with pytest.raises(bench_lib.BenchmarkError, match=r"jig_small.jsonl:1: .*below 84 px for a 3x3 grid"):
        bench_lib.read_benchmark("jigsaw", _write(root / "jig_small.jsonl", [{"image": "images/0.png"}]))
    # Through the job: the config field and the row, before any model is built.
    c = eval_config.get_config("tiny")
    c.eval.benchmarks.mmstar = _write(root / "mmstar_broken.jsonl", [json.dumps(MMSTAR[0]), "{oops"])
    with pytest.raises(build.ConfigFieldError,
                       match=r"config.eval.benchmarks.mmstar: .*mmstar_broken.jsonl:2: not valid"):
        build.eval_read_all(c)
    c.eval.benchmarks.mmstar = c.eval.benchmarks.jigsaw = ""  # tiny's other benchmark ("synthetic") too
    with pytest.raises(build.ConfigFieldError, match=r"config.eval.benchmarks: no benchmark file"):
        build.eval_read_all(c)


# ---- the job end to end on the tiny random model ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    """The tiny random model of configs/eval.py:tiny, built once (each build compiles its init)."""
    c = eval_config.get_config("tiny")
    tok = build.tokenizer(c)
    return c, tok, build.model(c, tok)


@pytest.mark.slow  # the eval job on the tiny model; the job's wiring runs fast in the hand-checked test below
def test_eval_job_end_to_end(bench_dir, tiny_model, tmp_path, monkeypatch, sampler_prompt_lengths):
    _, paths = bench_dir
    monkeypatch.setattr(build, "model", lambda config, tok, mesh=None: tiny_model[2])  # what build.model gives for c
    c = eval_config.get_config("tiny")
    for name, path in paths.items():
        c.eval.benchmarks[name] = path
    c.eval.limit = 2  # 2 rows each (MMVP: one pair)
    c.eval.max_new_tokens = 4
    # Two prompt buckets (few compiled shapes), neither one the default rule would pick: the
    # sampler keeps the pipeline's padding.
    c.data.bucket_lengths = (300, 600)
    # Answers drawn from two tokens, as a model trained with sample.allowed_tokens answers (the demo's letters).
    c.sample.allowed_tokens, c.sample.allow_eos = ("A", "B"), False
    results = eval_job.run(c, str(tmp_path))
    assert sampler_prompt_lengths and set(sampler_prompt_lengths) <= {300, 600}

    out = tmp_path / "eval"
    on_disk = json.load(open(out / "results.json"))
    assert set(on_disk["benchmarks"]) == set(FILES) == set(results)
    for name in FILES:
        rows = [json.loads(line) for line in open(out / f"{name}.jsonl")]
        assert [r["index"] for r in rows] == [0, 1]  # one answer per row, in file order
        assert all(re.fullmatch("[AB]{4}", r["answer"]) and r["num_tokens"] == 4 for r in rows), rows
        r = on_disk["benchmarks"][name]
        assert r["n"] == 2
        if name != "mmvp":  # the headline is the mean of the rows' scores
            assert r["score"] == pytest.approx(np.mean([row["correct"] for row in rows]))
    # results.md's table is results.json's, in percent
    table = [line.split("|")[1:-1] for line in open(out / "results.md").read().split("\n\n")[2].splitlines()[2:]]
    assert len(table) == len(FILES)
    for name, fmt, metric, score, n in ([cell.strip() for cell in row] for row in table):
        r = on_disk["benchmarks"][name]
        assert (fmt, metric, float(score), int(n)) == (r["format"], r["metric"], round(100 * r["score"], 2), r["n"])


def test_the_model_comes_from_init_from_when_set(tiny_model, tmp_path):
    from mmjax.train import checkpoints

    c, tok, model = tiny_model
    trained = jax.tree.map(lambda x: np.asarray(x) * 2 + 1, model.params)  # unlike the preset's weights
    checkpoints.save_model(str(tmp_path / "ckpt"), trained, model.config)
    c = eval_config.get_config("tiny")
    c.init_from = str(tmp_path / "ckpt")
    loaded = build.eval_model(c, tok)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), b)


# The job's scores against answers worked out by hand: the model's answers are scripted (the
# runner is replaced; everything else, reading, scoring, the files written, is the job's).
# Each benchmark's published rule applied by hand to the rows of FILES, in file order:
HAND_CHECKED = {  # name: (answers, right or wrong per row, headline score)
    # MathVista: gold B (145°) and B ("no"), 0.5, 7. B right; A wrong; 1/2 = 0.5 right; 8 wrong.
    "mathvista": ([_ans("B"), _ans("A"), _ans("\\frac{1}{2}"), _ans("8")], [1, 0, 1, 0], 2 / 4),
    # OCRBench: any accepted answer, case-folded, contained in the reply: CUMBERLAND yes; 42 yes
    # (a bare reply is read whole); STOP is not in "yield".
    "ocrbench": ([_ans("cumberland"), "the number is 42", _ans("yield")], [1, 1, 0], 2 / 3),
    # MMStar: gold A, C, B. A right; C wrong (B); "The answer is B" reads B, right.
    "mmstar": ([_ans("A"), _ans("B"), _ans("The answer is B")], [1, 0, 1], 2 / 3),
    # MMVP: gold A, B per pair; a pair counts only with both right: pair 1 (A, B) right,
    # pair 2 (A, A) and pair 3 (B, B) each one wrong: 1 of 3 pairs (4 of 6 questions).
    "mmvp": ([_ans("A"), _ans("(B) Closed"), _ans("A"), _ans("A"), _ans("B"), _ans("B")],
             [1, 1, 1, 0, 0, 1], 1 / 3),
    # DA-2K: point1 closer (A), then point2 closer (B): both right.
    "da2k": ([_ans("A"), _ans("B")], [1, 1], 2 / 2),
    # Jigsaw: the gold order in <think>/<answer> format solves row 1 (reward 1.2); row 2 gives
    # the reversed order: not solved (reward: format 0.2 only, the jigsaw part 0).
    "jigsaw": (None, [1, 0], 1 / 2),
    # qa: gold B (a bare letter is read whole: the demo's answers), then 0.5 by math-verify: 0.4 is wrong.
    "qa": (["B", _ans("0.4")], [1, 0], 1 / 2),
    # MMMU: gold B, D, 3 or -3 (open, a list of accepted answers), 0.5 (open). A wrong; (D) right;
    # -3 right (math-verify against the second accepted answer); \frac{1}{2} = 0.5 right: 3 of 4.
    "mmmu": ([_ans("A"), _ans("(D)"), _ans("-3"), _ans("\\frac{1}{2}")], [0, 1, 1, 1], 3 / 4),
    # HallusionBench: gold yes, no, yes, yes, yes, no, yes; the first word of the answer counts.
    # "Yes." right; "Yes, it is." wrong (no); yes right; "**Yes**" right (punctuation stripped);
    # Yes right; "No, it says GO." right; "I think yes" wrong (first word "i"): 5 of 7 questions.
    # Figures (VS figure 0, asked without one, in none): VS_chart_0_1 (rows 2, 4) wrong, VD_ocr_1_0
    # (rows 5, 7) wrong, VD_ocr_1_1 (row 6) right: 1 of 3. Question pairs: VS_chart_0_0 (rows 1, 2)
    # wrong, VS_chart_0_1 (3, 4) right, VD_ocr_1_0 (5, 6) right, VD_ocr_1_1 (7) wrong: 2 of 4.
    "hallusionbench": (["Yes.", "Yes, it is.", _ans("yes"), "**Yes**", _ans("Yes"), _ans("No, it says GO."),
                        "I think yes"], [1, 0, 1, 1, 1, 1, 0], 5 / 7),
}


def test_eval_job_scores_equal_hand_checked_answers(bench_dir, tmp_path, monkeypatch):
    _, paths = bench_dir
    answered = {}

    class Scripted:
        """The runner, with the answers above instead of a model's."""

        def __init__(self, model, tok, image_cfg, cfg, allowed_token_ids):
            assert allowed_token_ids is None  # the recipe restricts nothing

        def run(self, items, render, desc=""):
            texts = HAND_CHECKED[desc][0]
            if desc == "jigsaw":  # the right order for row 1, the reverse for row 2
                texts = [_ans(items[0].gold), _ans(",".join(reversed(items[1].gold.split(","))))]
            answered[desc] = texts
            return [runner_lib.Generation(text=t, num_tokens=7, stopped=True) for t in texts]

    monkeypatch.setattr(build, "model", lambda config, tok, mesh=None: None)  # no model: the runner is scripted
    monkeypatch.setattr(runner_lib, "Runner", Scripted)
    c = eval_config.get_config("tiny")
    for name, path in paths.items():
        c.eval.benchmarks[name] = path
    results = eval_job.run(c, str(tmp_path))

    out = tmp_path / "eval"
    on_disk = json.load(open(out / "results.json"))["benchmarks"]
    assert set(answered) == set(on_disk) == set(FILES)
    for name, (_, right, score) in HAND_CHECKED.items():
        rows = [json.loads(line) for line in open(out / f"{name}.jsonl")]
        assert [r["answer"] for r in rows] == answered[name]  # in file order
        assert [r["correct"] for r in rows] == right, name
        assert on_disk[name]["score"] == results[name]["score"] == pytest.approx(score), name
        assert on_disk[name]["n"] == len(FILES[name])
    assert on_disk["mmvp"]["metric"] == "pair_accuracy"
    assert on_disk["mmvp"]["metrics"]["question_accuracy"] == pytest.approx(4 / 6)
    assert on_disk["jigsaw"]["metrics"]["mean_reward"] == pytest.approx((1.2 + 0.2) / 2)
    assert on_disk["mathvista"]["by"]["category"] == {"math-targeted-vqa": {"score": 1.0, "n": 2},
                                                      "general-vqa": {"score": 0.0, "n": 2}}
    assert on_disk["hallusionbench"]["metric"] == "question_accuracy"
    assert on_disk["hallusionbench"]["metrics"]["figure_accuracy"] == pytest.approx(1 / 3)
    assert on_disk["hallusionbench"]["metrics"]["pair_accuracy"] == pytest.approx(2 / 4)
    assert on_disk["mmmu"]["by"]["subject"] == {"Accounting": {"score": 1.0, "n": 1},
                                                "Art_Theory": {"score": 0.0, "n": 1}, "Math": {"score": 1.0, "n": 2}}
    # results.md in percent, two decimals: 50.00, 66.67, 66.67, 33.33, 100.00, 50.00, 50.00, 75.00, 71.43
    table = [line.split("|")[1:-1] for line in open(out / "results.md").read().split("\n\n")[2].splitlines()[2:]]
    assert {row[0].strip(): row[3].strip() for row in table} == {
        "mathvista": "50.00", "ocrbench": "66.67", "mmstar": "66.67", "mmvp": "33.33", "da2k": "100.00",
        "jigsaw": "50.00", "qa": "50.00", "mmmu": "75.00", "hallusionbench": "71.43"}
