"""Sources: JSONL / parquet / folders / RGB-D, and every kind of bad input."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from mmjax.data import images as images_lib
from mmjax.data import rows, sources, synthetic
from mmjax.data.rng import record_rng
from mmjax.data.skips import DataError, Skipped

from .conftest import write_jsonl


def _png(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_jsonl_rows_in_the_difficulty_layouts(image_dir):
    path = write_jsonl(os.path.join(image_dir, "train.jsonl"), [
        # ms-swift (after toswift_grpo): images, messages, solution (+ a task tag).
        {"images": ["imgs/astronaut.png"], "solution": "42", "task_type": "counting",
         "messages": [{"role": "user", "content": "<image>How many?"},
                      {"role": "assistant", "content": "42"}]},
        "",  # blank lines are not rows
        # raw form: image_paths, prompt, ground_truth.
        {"image_paths": ["imgs/coffee.png", "imgs/chelsea.jpg"], "prompt": "Compare <image> <image>",
         "ground_truth": " B ", "ability": "choice", "id": "q7"},
    ])
    source = sources.JsonlSource(path, required=rows.QA_FIELDS)
    assert len(source) == 2
    first, second = source[0], source[1]
    np.testing.assert_array_equal(first["images"][0], _png(os.path.join(image_dir, "imgs/astronaut.png")))
    assert first["messages"] == [{"role": "user", "content": "<image>How many?"}]  # answer dropped
    assert (first["solution"], first["task"], first["id"]) == ("42", "counting", "0")
    assert first["where"] == f"{path}:1"
    assert len(second["images"]) == 2 and second["prompt"] == "Compare <image> <image>"
    assert (second["solution"], second["task"], second["id"]) == ("B", "choice", "q7")
    assert second["where"] == f"{path}:3"  # the editor's line number, blank line counted


def test_jsonl_bad_rows_are_skipped_with_file_and_line(image_dir):
    path = write_jsonl(os.path.join(image_dir, "bad.jsonl"), [
        {"images": ["imgs/corrupt.png"], "prompt": "<image>?", "solution": "1"},
        {"images": ["imgs/truncated.png"], "prompt": "<image>?", "solution": "1"},
        {"images": ["imgs/missing.png"], "prompt": "<image>?", "solution": "1"},
        {"images": ["imgs/coffee.png"], "prompt": "<image>?"},
        '{"images": ["imgs/coffee.png"], "prompt": ',
        {"images": [{"no": "path"}], "prompt": "?", "solution": "1"},
        ["not", "an", "object"],
      {"images": ["imgs/coffee.png"], "messages": ["not a message"], "solution": "1"},
        {"images": ["imgs/coffee.png"], "prompt": "<image>?", "solution": "1"},
    ])
    source = sources.JsonlSource(path, required=rows.QA_FIELDS)
    got = [source[i] for i in range(len(source))]
    reasons = [g.reason if isinstance(g, Skipped) else "ok" for g in got]
    assert reasons == ["image_unreadable", "image_unreadable", "image_missing", "missing_field",
                       "bad_json", "bad_row", "bad_row", "bad_row", "ok"]
    assert got[0].where == f"{path}:1 (imgs/corrupt.png)"
    assert got[2].where == f"{path}:3 (imgs/missing.png)"
    assert "'solution'" in got[3].detail
    strict = sources.JsonlSource(path, required=rows.QA_FIELDS, strict=True)
    for i, reason in enumerate(reasons[:-1]):
        with pytest.raises(DataError, match=reason):
            strict[i]
    assert not isinstance(strict[8], Skipped)


def test_parquet_rows_with_paths_and_embedded_bytes(image_dir):
    coffee = os.path.join(image_dir, "imgs/coffee.png")
    with open(coffee, "rb") as f:
        data = f.read()
    table = pa.table({
        "images": [[{"bytes": None, "path": "imgs/coffee.png"}], [{"bytes": data, "path": None}],
                   [{"bytes": None, "path": "imgs/corrupt.png"}]],
        "prompt": [[{"role": "user", "content": "<image>q"}]] * 3,  # verl: prompt is a message list
        "reward_model": [{"ground_truth": "7"}] * 3,
        "data_source": ["counting"] * 3,
    })
    path = os.path.join(image_dir, "train.parquet")
    pq.write_table(table, path, row_group_size=2)
    source = sources.ParquetSource(path, required=rows.QA_FIELDS)
    assert len(source) == 3
    for i in (1, 0):  # across row groups, out of order
        row = source[i]
        np.testing.assert_array_equal(row["images"][0], _png(coffee))
        assert row["messages"] == [{"role": "user", "content": "<image>q"}]
        assert (row["solution"], row["task"]) == ("7", "counting")
    bad = source[2]
    assert bad.reason == "image_unreadable" and bad.where.startswith(f"{path}:row 2")


def test_image_folder_lists_sorted_images_and_skips_corrupt_ones(image_dir):
    source = sources.ImageFolderSource(image_dir)
    assert source.files == ["imgs/astronaut.png", "imgs/chelsea.jpg", "imgs/coffee.png",
                            "imgs/corrupt.png", "imgs/truncated.png"]
    assert source[0]["images"][0].shape == (128, 128, 3)
    assert [source[i].reason for i in (3, 4)] == ["image_unreadable", "image_unreadable"]
    with pytest.raises(FileNotFoundError):
        sources.ImageFolderSource(os.path.join(image_dir, "nothing-here"))


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_rgbd_pairs_in_millimetre_png_or_metre_npy(tmp_path, depth_format):
    index = synthetic.write_rgbd_scenes(tmp_path, 2, seed=3, size=(60, 80), depth_format=depth_format)
    source = sources.RgbdSource.from_jsonl(index)
    _, depth = synthetic.rgbd_scene(record_rng(3, 0, 1), (60, 80))
    row = source[1]
    assert row["images"][0].shape == (60, 80, 3) and row["depth"].dtype == np.float32
    # PNG stores whole millimetres.
    np.testing.assert_allclose(row["depth"], depth, atol=0.0005 if depth_format == "png" else 0)
    assert (row["depth"] == 0).sum() == 100  # the 10 x 10 sensor dropout survives


def test_rgbd_bad_pairs(tmp_path):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "rgb.png")
    images_lib.save_depth_png(tmp_path / "small.png", np.ones((10, 10)))
    (tmp_path / "bad.png").write_bytes(b"nope")
    source = sources.RgbdSource([("rgb.png", "small.png"), ("rgb.png", "gone.png"),
                                 ("rgb.png", "bad.png"), ("gone.png", "small.png")], tmp_path)
    assert [source[i].reason for i in range(4)] == ["depth_shape_mismatch", "depth_missing",
                                                    "depth_unreadable", "image_missing"]
    write_jsonl(str(tmp_path / "index.jsonl"), [{"image": "rgb.png"}])
    with pytest.raises(ValueError, match="index.jsonl:1"):
        sources.RgbdSource.from_jsonl(tmp_path / "index.jsonl")


def test_video_folder_and_jsonl_video_paths(tmp_path, long_video):
    os.makedirs(tmp_path / "v")
    os.symlink(long_video, tmp_path / "v" / "a.mp4")
    assert sources.VideoFolderSource(tmp_path / "v")[0]["videos"] == [str(tmp_path / "v" / "a.mp4")]
    path = write_jsonl(str(tmp_path / "v.jsonl"), [{"videos": ["v/a.mp4"]}])
    assert sources.JsonlSource(path)[0]["videos"] == [str(tmp_path / "v" / "a.mp4")]


def test_exif_orientation_is_applied(tmp_path):
    # Stored 10 x 20 (H x W), grey, with a red 4 x 4 block in its top-left corner. The EXIF
    # orientation says how to turn the stored pixels for display (PIL's exif_transpose):
    # 3 = 180 degrees, 6 = 90 degrees clockwise, 8 = 90 degrees anticlockwise.
    stored = np.full((10, 20, 3), 90, np.uint8)
    stored[:4, :4] = (230, 20, 20)
    turns = {3: 2, 6: -1, 8: 1}  # np.rot90's k: anticlockwise quarter turns
    for orientation, k in turns.items():
        path = tmp_path / f"rotated{orientation}.jpg"
        image = Image.fromarray(stored)
        exif = image.getexif()
        exif[0x0112] = orientation
        image.save(path, exif=exif, quality=95)
        raw = np.asarray(Image.open(path).convert("RGB"))  # the stored pixels, as decoded, unturned
        decoded = images_lib.decode_image(str(path))
        assert decoded.shape == np.rot90(raw, k).shape == ((10, 20, 3) if k == 2 else (20, 10, 3))
        # Turning is lossless: exactly the decoded stored pixels turned, as PIL turns them.
        np.testing.assert_array_equal(decoded, np.rot90(raw, k))
        with Image.open(path) as pil:
            np.testing.assert_array_equal(decoded, np.asarray(ImageOps.exif_transpose(pil).convert("RGB")))
        # The red block moved from the stored top-left corner; ignoring the tag would leave it there.
        corner = {3: decoded[-4:, -4:], 6: decoded[:4, -4:], 8: decoded[-4:, :4]}[orientation]
        # (JPEG blurs the block's colour at its edges: compare the block's mean colour.)
        assert corner[..., 0].mean() > 180 and corner[..., 1:].mean() < 60, corner.mean(axis=(0, 1))
        assert abs(decoded[:4, :4].astype(int).mean(axis=(0, 1)) - 90).max() < 20
        assert not np.array_equal(decoded[:10, :10], raw[:10, :10])
