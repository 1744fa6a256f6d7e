"""tools/make_tfds.py writes an array_record TFDS dataset that reads back equal."""

from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from mmjax.data import rows, sources, tfds_io
from mmjax.data.skips import DataError

from .conftest import write_jsonl

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "make_tfds.py")


def _make_tfds():
    spec = importlib.util.spec_from_file_location("make_tfds", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_tfds_round_trip(image_dir, tmp_path, capsys):
    jsonl = write_jsonl(str(tmp_path / "train.jsonl"), [
        {"id": "a", "images": ["imgs/astronaut.png"], "solution": "3", "task_type": "counting",
         "messages": [{"role": "user", "content": "<image>How many?"}], "difficulty": "hard"},
        {"id": "b", "images": ["imgs/corrupt.png"], "prompt": "<image>?", "solution": "1"},
        {"id": "c", "images": ["imgs/chelsea.jpg", "imgs/coffee.png"], "prompt": "<image><image>Same?",
         "solution": "no"},
        {"id": "d", "images": ["imgs/missing.png"], "prompt": "<image>?", "solution": "1"},
    ])
    out = tmp_path / "tfds"
    assert _make_tfds().main(["--jsonl", jsonl, "--image_root", image_dir, "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "wrote 2 rows" in report and "'image_unreadable': 1" in report
    assert "'image_missing': 1" in report

    builder_dir = out / tfds_io.DATASET_NAME / tfds_io.VERSION
    written = tfds_io.TfdsSource(builder_dir, required=rows.QA_FIELDS)
    written = pickle.loads(pickle.dumps(written))  # as grain ships it to a worker
    original = sources.JsonlSource(jsonl, image_dir)
    assert len(written) == 2
    for got, want in zip([written[0], written[1]], [original[0], original[2]]):
        assert got["id"] == want["id"]
        assert (got["messages"], got["prompt"]) == (want["messages"], want["prompt"])
        assert (got["solution"], got["task"], got["extra"]) == (want["solution"], want["task"],
                                                                want["extra"])
        assert len(got["images"]) == len(want["images"])
        for g, w in zip(got["images"], want["images"]):
            np.testing.assert_array_equal(g, w)  # original bytes stored: lossless, JPEG too
    assert written[0]["extra"] == {"difficulty": "hard"}


def test_make_tfds_strict_stops_at_the_bad_row(image_dir, tmp_path):
    jsonl = write_jsonl(str(tmp_path / "t.jsonl"), [
        {"id": "a", "images": ["imgs/coffee.png"]}, {"id": "b", "images": ["imgs/truncated.png"]}])
    with pytest.raises(DataError, match=r"t.jsonl:2 \(.*imgs/truncated.png\).*truncated"):
        _make_tfds().main(["--jsonl", jsonl, "--image_root", image_dir, "--out",
                           str(tmp_path / "o"), "--strict"])


def test_a_corrupt_stored_image_is_a_skipped_row(tmp_path):
    good = tmp_path / "g.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    builder_dir = tfds_io.write_tfds([
        {"id": "x", "images": [str(good)]},
        {"id": "y", "images": [b"\x89PNG\r\n\x1a\ngarbage"]},
    ], tmp_path / "t")
    source = tfds_io.TfdsSource(builder_dir)
    assert source[0]["images"][0].shape == (8, 8, 3)
    skipped = source[1]
    assert skipped.reason == "row_unreadable" and skipped.where.endswith("[train]:1")
