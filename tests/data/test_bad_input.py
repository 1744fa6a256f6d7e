"""Bad input names its file and line, and never takes the good rows around it with it."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmjax.data import pipeline, sources
from mmjax.data.skips import DataError, Skipped

from .conftest import write_jsonl

GOOD = {"images": ["imgs/coffee.png"], "prompt": "<image>?", "solution": "1"}

# Image / video entries that are neither a path, bytes nor a {bytes, path} dict. None of
# them is an int, so reading them here cannot touch a file descriptor even on a regression.
BAD_ENTRIES = [
    {"images": [None], "prompt": "<image>?", "solution": "1"},
    {"images": [[1, 2]], "prompt": "<image>?", "solution": "1"},
    {"images": [1.5], "prompt": "<image>?", "solution": "1"},
    {"images": [{"path": 7}], "prompt": "<image>?", "solution": "1"},
    {"images": [{"path": [None]}], "prompt": "<image>?", "solution": "1"},
    {"images": [{"bytes": "not bytes"}], "prompt": "<image>?", "solution": "1"},
    {"images": [""], "prompt": "<image>?", "solution": "1"},
    {"videos": [None], "prompt": "<video>?", "solution": "1"},
    {"videos": [[1, 2]], "prompt": "<video>?", "solution": "1"},
    {"videos": [{"path": 5}], "prompt": "<video>?", "solution": "1"},
    {"videos": [3], "prompt": "<video>?", "solution": "1"},  # was str(3): a file named "3"
]


def _config(**kwargs) -> pipeline.PipelineConfig:
    defaults = dict(seed=0, shuffle=False, num_epochs=1, process_index=0, process_count=1,
                    read_threads=1)
    return pipeline.PipelineConfig(**{**defaults, **kwargs})


def _good_around(bad: list) -> list:
    """good, bad[0], good, bad[1], ..., good: good rows on the odd lines."""
    rows = [GOOD]
    for entry in bad:
        rows += [entry, GOOD]
    return rows


def test_non_path_image_and_video_entries_are_bad_rows_with_file_and_line(image_dir):
    path = write_jsonl(os.path.join(image_dir, "bad_refs.jsonl"), _good_around(BAD_ENTRIES))
    source = sources.JsonlSource(path)
    got = [source[i] for i in range(len(source))]
    for line, row in enumerate(got, start=1):
        if line % 2:
            assert not isinstance(row, Skipped), row
            assert row["images"][0].shape == (100, 150, 3) and row["where"] == f"{path}:{line}"
        else:
            assert isinstance(row, Skipped), (line, row)
            assert (row.reason, row.where) == ("bad_row", f"{path}:{line}"), row
    assert "images[0]" in got[1].detail and "null" in got[1].detail
    assert "images[0]['path'] is int 7" in got[7].detail

    # Through the pipeline: every good row survives, every bad one is counted.
    dataset = pipeline.build_dataset(source, [], _config())
    assert [s["where"] for s in dataset] == [f"{path}:{n}" for n in range(1, len(got) + 1, 2)]
    assert pipeline.skip_counter(dataset).counts == {"bad_row": len(BAD_ENTRIES)}

    strict = sources.JsonlSource(path, strict=True)
    for line in range(2, len(got) + 1, 2):
        with pytest.raises(DataError, match=re.escape(f"bad_row at {path}:{line}:")):
            strict[line - 1]
    assert not isinstance(strict[0], Skipped)
    with pytest.raises(DataError, match=re.escape(f"bad_row at {path}:2:")):
        list(pipeline.build_dataset(strict, [], _config(strict=True)))


# Reads the rows in a child process: on a regression, `open(3)` / `open(True)` would read the
# process's own descriptors (fd 1 is the pipe we read, so it blocks), and the timeout turns the
# hang into a failure instead of a stuck test run.
_CHILD = """
import json, sys
from mmjax.data import pipeline, sources
from mmjax.data.skips import DataError, Skipped
path = sys.argv[1]
got = [sources.JsonlSource(path)[i] for i in range(len(sources.JsonlSource(path)))]
config = pipeline.PipelineConfig(shuffle=False, num_epochs=1, process_index=0, process_count=1,
                                 read_threads=1)
dataset = pipeline.build_dataset(sources.JsonlSource(path), [], config)
kept = [s["where"] for s in dataset]
strict = []
for i in range(len(got)):
    try:
        sources.JsonlSource(path, strict=True)[i]
        strict.append(None)
    except DataError as e:
        strict.append(str(e))
print(json.dumps({
    "rows": [[g.reason, g.where] if isinstance(g, Skipped) else ["ok", g["where"]] for g in got],
    "kept": kept, "counts": pipeline.skip_counter(dataset).counts, "strict": strict}))
"""


def test_int_and_bool_image_entries_are_never_opened_as_file_descriptors(image_dir):
    # The child inherits a pipe nobody writes to: opening its number as an fd blocks for sure.
    silent, writer = os.pipe()
    fd_like = [{"images": [silent], "prompt": "<image>?", "solution": "1"},
               {"images": [3], "prompt": "<image>?", "solution": "1"},
               {"images": True, "prompt": "<image>?", "solution": "1"},
               {"images": [0], "prompt": "<image>?", "solution": "1"},
               {"image": {"bytes": None, "path": 1}, "prompt": "<image>?", "solution": "1"}]
    path = write_jsonl(os.path.join(image_dir, "fd.jsonl"), _good_around(fd_like))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        child = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True,
                               timeout=60, cwd=repo, stdin=subprocess.PIPE, pass_fds=(silent,))
    except subprocess.TimeoutExpired:
        pytest.fail("reading an int image entry blocked: it was opened as a file descriptor")
    finally:
        os.close(silent)
        os.close(writer)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    lines = range(1, 2 * len(fd_like) + 2)
    assert result["rows"] == [["ok" if n % 2 else "bad_row", f"{path}:{n}"] for n in lines]
    assert result["kept"] == [f"{path}:{n}" for n in lines if n % 2]
    assert result["counts"] == {"bad_row": len(fd_like)}
    for n, message in zip(lines, result["strict"]):
        if n % 2:
            assert message is None
        else:
            assert message.startswith(f"bad_row at {path}:{n}:"), message


@pytest.mark.parametrize("content", ["", "\n\n   \n\t\n"], ids=["empty", "blank_lines"])
def test_an_empty_jsonl_names_the_file(tmp_path, content):
    path = tmp_path / "train.jsonl"
    path.write_text(content)
    source = sources.JsonlSource(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        pipeline.build_dataset(source, [], _config())


def test_too_few_rows_for_the_process_shards_names_the_file(tmp_path, image_dir):
    path = write_jsonl(str(tmp_path / "one.jsonl"), [GOOD])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*1 records cannot fill 2"):
        pipeline.build_dataset(sources.JsonlSource(path, data_root=image_dir), [],
                               _config(process_index=0, process_count=2))


def test_a_corrupt_parquet_file_names_its_path(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": ["q"] * 50, "solution": ["a"] * 50}), good)
    data = good.read_bytes()
    cases = {"random.parquet": os.urandom(4096), "truncated.parquet": data[: len(data) // 2],
             "empty.parquet": b""}
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(DataError, match=re.escape(f"{path}: not a readable parquet file")):
            sources.ParquetSource(path)
    assert len(sources.ParquetSource(good)) == 50
    with pytest.raises(FileNotFoundError):
        sources.ParquetSource(tmp_path / "missing.parquet")


class _Rows:
    """Four text rows located at rows.jsonl:1..4."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return {"id": str(index), "where": f"rows.jsonl:{index + 1}", "prompt": "?",
                "solution": str(index)}


def _explode_on_third(row):
    if row["id"] == "2":
        raise ZeroDivisionError("bug in a transform")
    return row


def test_a_strict_transform_error_names_the_file_and_line_and_chains_the_cause():
    with pytest.raises(DataError, match=re.escape("transform_error at rows.jsonl:3:")) as info:
        list(pipeline.build_dataset(_Rows(), [_explode_on_third], _config(strict=True)))
    assert "_explode_on_third" in str(info.value) and "bug in a transform" in str(info.value)
    assert isinstance(info.value.__cause__, ZeroDivisionError)

    # Not strict: the other rows all survive.
    dataset = pipeline.build_dataset(_Rows(), [_explode_on_third], _config())
    assert [s["where"] for s in dataset] == ["rows.jsonl:1", "rows.jsonl:2", "rows.jsonl:4"]
    assert pipeline.skip_counter(dataset).counts == {"transform_error": 1}


def _blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of zeros, written by hand: PIL would hold width x height bytes to save it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, scanline = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(scanline * 1000) for _ in range(height // 1000))
    idat += packer.compress(scanline * (height % 1000)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_an_image_too_large_to_decode_is_unreadable_at_its_file_line_and_name(image_dir):
    # 20000 x 20000 (the case) is over PIL's default refusal limit, 2 x MAX_IMAGE_PIXELS;
    # the file is ~50 kB and its header alone decides, so nothing large is ever allocated.
    with open(os.path.join(image_dir, "imgs", "huge.png"), "wb") as f:
        f.write(_blank_png(20000, 20000))
    huge = {"images": ["imgs/huge.png"], "prompt": "<image>?", "solution": "1"}
    path = write_jsonl(os.path.join(image_dir, "huge.jsonl"), [GOOD, huge, GOOD])
    source = sources.JsonlSource(path)
    got = source[1]
    assert isinstance(got, Skipped), got
    limit = 2 * Image.MAX_IMAGE_PIXELS
    assert (got.reason, got.where) == ("image_unreadable", f"{path}:2 (imgs/huge.png)")
    assert got.detail.startswith(f"too large to decode (20000 x 20000 = 400000000 pixels > PIL's limit of {limit}")
    assert "MAX_IMAGE_PIXELS" in got.detail
    assert str(got).startswith(f"image_unreadable at {path}:2 (imgs/huge.png): too large to decode")

    # Through the pipeline: counted as image_unreadable (not read_error at JsonlSource(...)[1]).
    dataset = pipeline.build_dataset(source, [], _config())
    assert [s["where"] for s in dataset] == [f"{path}:1", f"{path}:3"]
    assert pipeline.skip_counter(dataset).counts == {"image_unreadable": 1}
    with pytest.raises(DataError, match=re.escape(f"image_unreadable at {path}:2 (imgs/huge.png): too large")):
        list(pipeline.build_dataset(sources.JsonlSource(path, strict=True), [], _config(strict=True)))


def test_pils_limit_steps_refuse_over_twice_and_decode_with_a_named_warning_between(image_dir, monkeypatch,
                                                                                     caplog):
    path = write_jsonl(os.path.join(image_dir, "limit.jsonl"), [GOOD])  # coffee.png: 150 x 100 = 15000 pixels
    # Between 1x and 2x PIL only warns: decoded, as PIL does, and the warning names the row and image.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)
    with pytest.warns(Image.DecompressionBombWarning):
        row = sources.JsonlSource(path)[0]
    assert not isinstance(row, Skipped) and row["images"][0].shape == (100, 150, 3)
    assert f"{path}:1 (imgs/coffee.png): 150 x 100 image is over PIL.Image.MAX_IMAGE_PIXELS = 10000" in caplog.text
    # Over 2x: refused by PIL, skipped with the size and the limit in force.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 7000)
    got = sources.JsonlSource(path)[0]
    assert isinstance(got, Skipped) and got.where == f"{path}:1 (imgs/coffee.png)"
    assert got.detail.startswith("too large to decode (150 x 100 = 15000 pixels > PIL's limit of 14000")
    # Warnings made errors (python -W error): PIL raises its warning; the same named skip.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        got = sources.JsonlSource(path)[0]
    assert isinstance(got, Skipped) and got.where == f"{path}:1 (imgs/coffee.png)"
    assert got.detail.startswith("too large to decode (150 x 100 = 15000 pixels > PIL.Image.MAX_IMAGE_PIXELS = 10000")
