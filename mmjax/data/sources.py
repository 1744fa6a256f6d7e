"""Random-access data sources (grain-compatible: `__len__`, `__getitem__`).

Each `__getitem__` returns a canonical row (see `mmjax.data.rows`) or a
`Skipped` marker naming the file, the row and the problem; with `strict=True`
it raises `DataError` instead. Sources hold only paths and small indexes, so
they pickle cheaply into grain worker processes; files are opened per read.
"""

from __future__ import annotations

import bisect
import json
import os
from typing import Any, Sequence

import numpy as np

from mmjax.data import images as images_lib
from mmjax.data import rows as rows_lib
from mmjax.data.skips import DataError, Skipped, skip_or_raise

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")


class _RowFile:
    """Settings shared by the row-file sources: where the file is, how rows are checked."""

    def __init__(self, path: str | os.PathLike, data_root: str | os.PathLike | None,
                 required: Sequence[str], decode_images: bool, strict: bool):
        self.path = os.fspath(path)
        self.data_root = os.fspath(data_root) if data_root is not None else os.path.dirname(self.path)
        self.required = tuple(required)
        self.decode_images = decode_images
        self.strict = strict


class JsonlSource(_RowFile):
    """Rows of a JSON-lines file; image paths relative to `data_root`.

    Args:
      path: the .jsonl file.
      data_root: directory the image/video paths are relative to (default: the
        file's directory).
      required: fields a row must have, e.g. `rows.QA_FIELDS` or ("images",).
      decode_images: decode images on read (False keeps resolved paths).
      strict: raise `DataError` on a bad row instead of skipping it.
    """

    def __init__(self, path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                 required: Sequence[str] = (), decode_images: bool = True, strict: bool = False):
        super().__init__(path, data_root, required, decode_images, strict)
        self._offsets, self._line_numbers = self._index_lines()

    def _index_lines(self) -> tuple[np.ndarray, np.ndarray]:
        """Byte offset and 1-based line number of every non-blank line."""
        offsets, line_numbers = [], []
        with open(self.path, "rb") as f:
            position = 0
            for line_number, line in enumerate(f, start=1):
                if line.strip():
                    offsets.append(position)
                    line_numbers.append(line_number)
                position += len(line)
        return np.asarray(offsets, dtype=np.int64), np.asarray(line_numbers, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        with open(self.path, "rb") as f:
            f.seek(int(self._offsets[index]))
            line = f.readline()
        where = f"{self.path}:{self._line_numbers[index]}"
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return skip_or_raise(self.strict, "bad_json", where, str(e))
        return rows_lib.normalize_row(raw, where=where, data_root=self.data_root,
                                      required=self.required, decode_images=self.decode_images,
                                      strict=self.strict, default_id=str(index))

    def __repr__(self) -> str:
        return f"JsonlSource({self.path!r}, {len(self)} rows)"


class ParquetSource(_RowFile):
    """Rows of a parquet file (paths relative to `data_root`, or embedded image bytes)."""

    def __init__(self, path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                 required: Sequence[str] = (), decode_images: bool = True, strict: bool = False):
        import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

        super().__init__(path, data_root, required, decode_images, strict)
        try:
            metadata = pq.ParquetFile(self.path).metadata
        except FileNotFoundError:
            raise
        except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid / ArrowIOError; no path in them.
            raise DataError(f"{self.path}: not a readable parquet file"
                            f" ({type(e).__name__}: {e})") from e
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cached: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return int(self._group_starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cached": None}

    def _row_group(self, group: int) -> Any:
        import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top

        # Reads are mostly shuffled, but a row group is the unit parquet decodes.
        if self._cached is None or self._cached[0] != group:
            self._cached = (group, pq.ParquetFile(self.path, memory_map=True).read_row_group(group))
        return self._cached[1]

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows in {self.path}")
        group = bisect.bisect_right(self._group_starts, index) - 1
        table = self._row_group(group)
        raw = table.slice(index - int(self._group_starts[group]), 1).to_pylist()[0]
        return rows_lib.normalize_row(raw, where=f"{self.path}:row {index}", data_root=self.data_root,
                                      required=self.required, decode_images=self.decode_images,
                                      strict=self.strict, default_id=str(index))

    def __repr__(self) -> str:
        return f"ParquetSource({self.path!r}, {len(self)} rows)"


def _list_files(root: str, extensions: Sequence[str]) -> list[str]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(tuple(extensions)):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(found)


class ImageFolderSource:
    """Every image file under `root` (recursively, sorted) as a one-image row."""

    def __init__(self, root: str | os.PathLike, strict: bool = False):
        self.root = os.fspath(root)
        self.strict = strict
        self.files = _list_files(self.root, images_lib.IMAGE_EXTENSIONS)
        if not self.files:
            raise FileNotFoundError(f"no image files under {self.root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        name = self.files[index]
        return rows_lib.normalize_row({"id": name, "images": [name]}, where=f"{self.root}:{name}",
                                      data_root=self.root, strict=self.strict)

    def __repr__(self) -> str:
        return f"ImageFolderSource({self.root!r}, {len(self)} images)"


class VideoFolderSource:
    """Every video file under `root` as a row with one video path (decoded by the task)."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.files = _list_files(self.root, VIDEO_EXTENSIONS)
        if not self.files:
            raise FileNotFoundError(f"no video files under {self.root}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.files[index]
        return rows_lib.normalize_row({"id": name, "videos": [name]}, where=f"{self.root}:{name}",
                                      data_root=self.root)

    def __repr__(self) -> str:
        return f"VideoFolderSource({self.root!r}, {len(self)} videos)"


class RgbdSource:
    """RGB-D pairs: rows carry `images=[rgb]` and `depth` (float32 metres, 0 = missing).

    Depth files are 16-bit PNGs in millimetres or `.npy` arrays in metres, at the
    RGB resolution. Build from explicit pairs or from a JSONL index whose rows have
    `image` and `depth` paths relative to `data_root`.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], data_root: str | os.PathLike | None = None,
                 strict: bool = False):
        self.pairs = [(os.fspath(rgb), os.fspath(depth)) for rgb, depth in pairs]
        self.data_root = os.fspath(data_root) if data_root is not None else None
        self.strict = strict

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                   strict: bool = False) -> "RgbdSource":
        pairs = []
        with open(path) as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    pairs.append((row["image"], row["depth"]))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    # An index with a broken line is a broken index, not one bad sample.
                    raise ValueError(f"{path}:{line_number}: need an object with 'image' and 'depth'"
                                     f" ({type(e).__name__}: {e})") from e
        return cls(pairs, data_root if data_root is not None else os.path.dirname(os.fspath(path)),
                   strict)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        rgb_name, depth_name = self.pairs[index]
        where = f"pair {index} ({rgb_name}, {depth_name})"
        row = rows_lib.normalize_row({"id": rgb_name, "images": [rgb_name]}, where=where,
                                     data_root=self.data_root, strict=self.strict)
        if isinstance(row, Skipped):
            return row
        depth_path = rows_lib.resolve_path(depth_name, self.data_root)
        try:
            depth = images_lib.load_depth(depth_path)
        except FileNotFoundError:
            return skip_or_raise(self.strict, "depth_missing", where, f"no such file {depth_path}")
        except (OSError, ValueError, SyntaxError) as e:
            return skip_or_raise(self.strict, "depth_unreadable", where, f"{type(e).__name__}: {e}")
        if depth.shape != row["images"][0].shape[:2]:
            return skip_or_raise(self.strict, "depth_shape_mismatch", where,
                                 f"depth {depth.shape} vs image {row['images'][0].shape[:2]}")
        row["depth"] = depth
        return row

    def __repr__(self) -> str:
        return f"RgbdSource({len(self)} pairs)"
