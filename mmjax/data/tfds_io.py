"""TFDS datasets stored as array_record: written and read without TensorFlow.

Layout of one example (FEATURES): `images` (a sequence of encoded images, kept
in their original bytes), `prompt`, `messages_json`, `solution`, `task`, `id`,
`extra_json` (text; "" stands for a missing value). Reading goes through
`tfds.data_source`, grain's random-access path for TFDS.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

import tensorflow_datasets as tfds

from mmjax.data import rows as rows_lib
from mmjax.data.skips import Skipped, skip_or_raise

DATASET_NAME = "mmjax_rows"
VERSION = "1.0.0"
TEXT_FIELDS = ("prompt", "messages_json", "solution", "task", "id", "extra_json")


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "images": tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3))),
        **{name: tfds.features.Text() for name in TEXT_FIELDS},
    })


class MmjaxRows(tfds.core.GeneratorBasedBuilder):
    """Rows in mmjax's canonical layout; examples come from `write_tfds`."""

    VERSION = tfds.core.Version(VERSION)

    def __init__(self, *, examples: Iterable[tuple[str, dict[str, Any]]] = (), split: str = "train",
                 **kwargs: Any):
        self._examples = examples
        self._split = split
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # disable_shuffling keeps the input order (TFDS otherwise orders by key hash).
        return tfds.core.DatasetInfo(builder=self, features=features(), disable_shuffling=True,
                                     description="Rows written by mmjax tools/make_tfds.py")

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[str, dict[str, Any]]]]:
        del dl_manager
        return {self._split: self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from self._examples


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def to_example(row: dict[str, Any]) -> dict[str, Any]:
    """A canonical row whose `images` are paths or encoded bytes -> a TFDS example."""
    return {
        "images": list(row["images"]),
        "prompt": _text(row.get("prompt")),
        "messages_json": "" if row.get("messages") is None else json.dumps(row["messages"]),
        "solution": _text(row.get("solution")),
        "task": _text(row.get("task")),
        "id": _text(row.get("id")),
        "extra_json": json.dumps(row.get("extra") or {}, default=str),
    }


def write_tfds(rows: Iterable[dict[str, Any]], out_dir: str | os.PathLike,
               split: str = "train") -> str:
    """Writes canonical rows as an array_record TFDS dataset; returns its directory.

    Row ids key the examples and must be unique. Images must be paths or encoded
    bytes (stored as they are, no re-encoding).
    """
    examples = ((row["id"], to_example(row)) for row in rows)
    builder = MmjaxRows(examples=examples, split=split, data_dir=os.fspath(out_dir),
                        file_format="array_record")
    builder.download_and_prepare()
    return os.fspath(builder.data_dir)


class TfdsSource:
    """Random access to an array_record TFDS dataset, as canonical rows.

    Args:
      builder_dir: the dataset version directory (holding dataset_info.json).
      split: split name.
      required: fields a row must have (see `mmjax.data.rows`).
      strict: raise `DataError` on a bad row instead of skipping it.
    """

    def __init__(self, builder_dir: str | os.PathLike, split: str = "train",
                 required: tuple[str, ...] = (), strict: bool = False):
        self.builder_dir = os.fspath(builder_dir)
        self.split = split
        self.required = tuple(required)
        self.strict = strict
        self._source = self._open()

    def _open(self) -> Any:
        return tfds.builder_from_directory(self.builder_dir).as_data_source(split=self.split)

    # Worker processes reopen the files rather than receive open handles.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_source"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._source = self._open()

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any] | Skipped:
        where = f"{self.builder_dir}[{self.split}]:{index}"
        try:
            example = self._source[index]
        except (OSError, ValueError, SyntaxError) as e:  # A corrupt stored image fails to decode.
            return skip_or_raise(self.strict, "row_unreadable", where, f"{type(e).__name__}: {e}")
        text = {k: example[k].decode("utf-8") if isinstance(example[k], bytes) else str(example[k])
                for k in TEXT_FIELDS}
        raw: dict[str, Any] = json.loads(text["extra_json"] or "{}")
        raw.update({k: v for k, v in text.items() if v and k not in ("messages_json", "extra_json")})
        if text["messages_json"]:
            raw["messages"] = json.loads(text["messages_json"])
        raw["images"] = list(example["images"])
        return rows_lib.normalize_row(raw, where=where, data_root=None, required=self.required,
                                      strict=self.strict, default_id=str(index))

    def __repr__(self) -> str:
        return f"TfdsSource({self.builder_dir!r}, split={self.split!r}, {len(self)} rows)"
