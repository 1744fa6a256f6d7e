"""Synthetic benchmark files (mmjax.eval.synthetic_benchmarks) and `configs/eval.py:tiny`, which runs on them.

The files are read back by the real readers; each gold is checked against the image itself (the
colour at a shape's centre, the shapes of a colour counted as pixel regions, the photo crop and
the tiles the jigsaw shows), not against the generator's own answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from configs import eval as eval_config
from mmjax.data import synthetic
from mmjax.eval import benchmarks as bench_lib
from mmjax.eval import synthetic_benchmarks as synth
from mmjax.jobs import build, preflight

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM = 12


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {fmt: synth.write_benchmark(fmt, root / fmt, NUM, seed=3) for fmt in synth.FORMATS}


@pytest.fixture
def cache_in_tmp(tmp_path, monkeypatch):
    """tempfile.gettempdir() -> tmp_path, so the cache under it starts empty."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / "mmjax_synthetic"


def _rows(path):
    return [json.loads(line) for line in open(path)]


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_files_read_back_through_the_readers(written):
    assert set(synth.FORMATS) == {"mmstar", "jigsaw", "qa"}
    for fmt, path in written.items():
        items = bench_lib.read_benchmark(fmt, path)
        assert len(items) == NUM and [i.index for i in items] == list(range(NUM))
        folder = os.path.dirname(path)
        for row, item in zip(_rows(path), items):
            image = row["images"][0] if fmt == "qa" else row["image"]
            assert not os.path.isabs(image)  # relative to the file's folder
            assert item.image_paths == (os.path.join(folder, image),)
            assert item.image_sizes == (synth.QA_IMAGE_SIZE if fmt == "qa" else synth.IMAGE_SIZE,)
    mmstar = bench_lib.read_benchmark("mmstar", written["mmstar"])
    assert {i.scorer for i in mmstar} == {"choice"} and {i.gold for i in mmstar} <= set("ABCD")
    assert {i.groups["l2_category"][0] for i in mmstar} == {"colour", "counting"}  # both kinds of question


def _options(question: str) -> dict[str, str]:
    """MMStar's "Options: A: x, B: y, ..." line -> {letter: option}."""
    line = question.split("\nOptions: ", 1)[1]
    return dict(re.findall(r"([A-D]): ([^,]+)(?:, |$)", line))


def test_mmstar_gold_names_what_the_image_shows(written):
    path, kinds = written["mmstar"], set()
    for row in _rows(path):
        options = _options(row["question"])
        assert list(options) == list("ABCD") and len(set(options.values())) == 4
        image = _pixels(os.path.join(os.path.dirname(path), row["image"]))
        shapes = row["shapes"]
        for s in shapes:  # each listed shape is drawn in its colour
            assert tuple(image[s["row"], s["col"]]) == synthetic.COLOURS[s["colour"]]
        gold = options[row["answer"]]
        asked = re.match(r"What colour is the (\w+) in the image\?", row["question"])
        if asked:  # the one shape of that kind has the gold colour at its centre
            target, = [s for s in shapes if s["kind"] == asked.group(1)]
            assert tuple(image[target["row"], target["col"]]) == synthetic.COLOURS[gold]
            kinds.add("colour")
        else:  # the regions of exactly that colour, counted in the pixels
            colour = re.match(r"How many (\w+) shapes are there in the image\?", row["question"]).group(1)
            regions, n = ndimage.label(np.all(image == synthetic.COLOURS[colour], axis=-1))
            sizes = np.bincount(regions.ravel())[1:]
            assert int(gold) == int(np.sum(sizes >= 100)) == sum(s["colour"] == colour for s in shapes), row
            kinds.add("counting")
    assert kinds == {"colour", "counting"}


def test_jigsaw_rows_are_photo_crops_cut_as_the_reader_says(written):
    path = written["jigsaw"]
    items = bench_lib.read_benchmark("jigsaw", path)
    for row, item in zip(_rows(path), items):
        image = _pixels(item.image_paths[0])
        top, left, side = row["crop"]
        crop = Image.fromarray(synthetic.photo(row["category"])[top:top + side, left:left + side])
        np.testing.assert_array_equal(image, np.asarray(crop.resize((168, 168), Image.Resampling.BILINEAR)))
        order = [int(v) for v in item.gold.split(",")]
        assert sorted(order) == list(range(1, 10)) and item.grid == (3, 3)
        sample = bench_lib.render(item, [image], bench_lib.ReadOptions())
        for piece, shown in enumerate(order):  # piece p (row-major) is shown at position gold[p]
            r, c = divmod(piece, 3)
            np.testing.assert_array_equal(sample["images"][shown - 1], image[56 * r:56 * r + 56, 56 * c:56 * c + 56])
    assert len({i.gold for i in items}) > 1


def test_qa_rows_are_held_out_graded_rows_shown_as_training_shows_them(written):
    """Row i is ColourChoiceSource(graded, seed + QA_SEED_OFFSET)[i]: the same image bytes, and the
    prompt, images and answer the training transform (QaSample, no system prompt) makes of it."""
    from mmjax.data.qa import QaSample

    path = written["qa"]
    items = bench_lib.read_benchmark("qa", path)
    held_out = synthetic.ColourChoiceSource(NUM, seed=3 + synth.QA_SEED_OFFSET, size=synth.QA_IMAGE_SIZE, graded=True)
    train_ids = {synthetic.ColourChoiceSource(NUM, seed=s, size=synth.QA_IMAGE_SIZE, graded=True)[i]["id"]
                 for s in range(8) for i in range(NUM)}
    factors = set()
    for index, item in enumerate(items):
        row = held_out[index]
        image = _pixels(item.image_paths[0])
        np.testing.assert_array_equal(image, row["images"][0])
        shown = bench_lib.render(item, [image], bench_lib.ReadOptions(), system_prompt=False)
        trained = QaSample(system_prompt=False).map(row)
        assert shown["messages"] == trained["messages"] and item.gold == row["solution"] == trained["solution"]
        assert (item.scorer, item.id) == ("choice", row["id"]) and item.id not in train_ids
        assert {k: v[0] for k, v in item.groups.items() if k in ("scale", "contrast", "distractors")} == {
            k: str(row["extra"][k]) for k in ("scale", "contrast", "distractors")}
        factors.add((row["extra"]["scale"], row["extra"]["contrast"]))
    assert len(factors) > 3  # the rows differ in difficulty


def _files(folder) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(folder) for f in names}


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path):
    for fmt in synth.FORMATS:
        a = _files(os.path.dirname(synth.write_benchmark(fmt, tmp_path / fmt / "a", 4, seed=7)))
        b = _files(os.path.dirname(synth.write_benchmark(fmt, tmp_path / fmt / "b", 4, seed=7)))
        c = _files(os.path.dirname(synth.write_benchmark(fmt, tmp_path / fmt / "c", 4, seed=8)))
        short = _files(os.path.dirname(synth.write_benchmark(fmt, tmp_path / fmt / "d", 2, seed=7)))
        assert a == b and len(a) == 5
        assert set(c) == set(a) and all(c[name] != a[name] for name in a)  # every row and image differs
        assert all(short[name] == a[name] for name in short if name.endswith(".png"))  # row i: (seed, i) only
        assert a[f"{fmt}.jsonl"].startswith(short[f"{fmt}.jsonl"])


def test_the_cache_writes_once(cache_in_tmp, monkeypatch):
    path = synth.cached_benchmark("mmstar", 3, seed=1)
    assert path == str(cache_in_tmp / f"bench_mmstar_n3_seed1_v{synth.VERSION}" / "mmstar.jsonl")
    before = {name: os.stat(os.path.join(os.path.dirname(path), name)).st_mtime_ns
              for name in _files(os.path.dirname(path))}
    monkeypatch.setattr(synth, "write_benchmark", lambda *a, **k: pytest.fail("rewritten"))
    assert synth.cached_benchmark("mmstar", 3, seed=1) == path
    assert {name: os.stat(os.path.join(os.path.dirname(path), name)).st_mtime_ns for name in before} == before
    assert os.listdir(cache_in_tmp) == [os.path.basename(os.path.dirname(path))]  # no temporary folder left
    with pytest.raises(ValueError, match=r"no synthetic benchmark of format 'ocrbench'"):
        synth.cached_benchmark("ocrbench", 3)


def test_tiny_eval_reads_synthetic_benchmarks(cache_in_tmp, tmp_path):
    c = eval_config.get_config("tiny")
    assert (c.eval.benchmarks.mmstar, c.eval.benchmarks.jigsaw) == (build.SYNTHETIC_BENCHMARK,) * 2 == (
        preflight.SYNTHETIC_BENCHMARK,) * 2
    preflight.check_inputs(c, str(tmp_path / "w"))  # "synthetic" is no missing file
    files = build.eval_benchmark_files(c)
    assert set(files) == {"mmstar", "jigsaw"}
    assert all(path.startswith(str(cache_in_tmp)) for path in files.values())
    c.eval.data_root = str(tmp_path)  # other files' images: a synthetic file's sit beside it
    c.eval.benchmarks.mmstar_val = build.SYNTHETIC_BENCHMARK  # a "<format>_" name: format mmstar
    items = build.eval_read_all(c)
    assert {name: len(v) for name, v in items.items()} == {"mmstar": 8, "jigsaw": 8, "mmstar_val": 8}
    c.eval.synthetic_rows = 5  # another count: another cached file
    assert {name: len(v) for name, v in build.eval_read_all(c).items()} == {"mmstar": 5, "jigsaw": 5, "mmstar_val": 5}
    c.eval.benchmarks.jigsaw = str(tmp_path / "missing.jsonl")  # a real path is still checked
    with pytest.raises(preflight.PreflightError, match=r"config.eval.benchmarks.jigsaw=.*no such file"):
        preflight.check_inputs(c, str(tmp_path / "w"))


def test_a_format_without_synthetic_rows_names_the_field_and_the_ones_with(cache_in_tmp):
    c = eval_config.get_config("tiny")
    c.eval.benchmarks.ocrbench = build.SYNTHETIC_BENCHMARK
    with pytest.raises(build.ConfigFieldError, match=re.escape(
            "config.eval.benchmarks.ocrbench='synthetic': format 'ocrbench' has no synthetic rows; the formats "
            "that do: ['mmstar', 'jigsaw', 'qa']")):
        build.eval_benchmark_files(c)


@pytest.mark.slow  # the eval job on the tiny random model, in a CLI subprocess
def test_tiny_eval_runs_from_the_command_line(tmp_path):
    workdir = tmp_path / "w"
    env = dict(os.environ, JAX_PLATFORMS="cpu", TMPDIR=str(tmp_path / "tmp"))  # its own synthetic cache
    os.makedirs(env["TMPDIR"])
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/eval.py:tiny",
                           "--workdir", str(workdir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(workdir / "eval" / "results.json"))["benchmarks"]
    assert set(results) == {"mmstar", "jigsaw"}
    for name, r in results.items():
        assert r["file"].startswith(env["TMPDIR"])
        assert r["n"] == len(_rows(r["file"])) == 8  # config.eval.synthetic_rows' default
        assert 0.0 <= r["score"] <= 1.0
        answers = [json.loads(line) for line in open(workdir / "eval" / f"{name}.jsonl")]
        assert len(answers) == r["n"]
