"""Writes a JSONL dataset (images relative to a root) as an array_record TFDS dataset.

  python tools/make_tfds.py --jsonl train.jsonl --image_root data/ --out tfds_dir [--split train]

Rows use the difficulty-work layout (`images`, `messages` or `prompt`,
`solution`, a task field); image files are stored with their original encoding.
Rows with a missing or unreadable image or missing fields are skipped and
reported per reason (or abort the run with --strict). The written dataset is
read back and checked before the tool exits. Needs no TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Iterator

from PIL import Image

from mmjax.data import sources, tfds_io
from mmjax.data.skips import SkipCounter, Skipped, skip_or_raise


def _checked_rows(source: sources.JsonlSource, counter: SkipCounter,
                  strict: bool) -> Iterator[dict[str, Any]]:
    seen_ids: set[str] = set()
    for index in range(len(source)):
        row = source[index]
        if not isinstance(row, Skipped):
            row = _check_images(row, strict)
        if not isinstance(row, Skipped) and row["id"] in seen_ids:
            row = skip_or_raise(strict, "duplicate_id", row["where"], f"id {row['id']!r} seen before")
        if isinstance(row, Skipped):
            counter.record(row)
            continue
        seen_ids.add(row["id"])
        yield row


def _check_images(row: dict[str, Any], strict: bool) -> dict[str, Any] | Skipped:
    """Opens every image once so a corrupt file is reported here, not at training time."""
    for path in row["images"]:
        try:
            with Image.open(path) as image:
                image.load()
        except FileNotFoundError:
            return skip_or_raise(strict, "image_missing", f"{row['where']} ({path})", "no such file")
        except (OSError, ValueError, SyntaxError) as e:
            return skip_or_raise(strict, "image_unreadable", f"{row['where']} ({path})",
                                 f"{type(e).__name__}: {e}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jsonl", required=True, help="input JSON-lines file")
    parser.add_argument("--image_root", default=None,
                        help="directory image paths are relative to (default: the JSONL's directory)")
    parser.add_argument("--out", required=True, help="TFDS data_dir to write into")
    parser.add_argument("--split", default="train")
    parser.add_argument("--require", default="images",
                        help="comma-separated fields every row needs (e.g. images,prompt,solution)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    required = tuple(f for f in args.require.split(",") if f)
    source = sources.JsonlSource(args.jsonl, args.image_root, required=required,
                                 decode_images=False, strict=args.strict)
    counter = SkipCounter()
    builder_dir = tfds_io.write_tfds(_checked_rows(source, counter, args.strict), args.out,
                                     split=args.split)

    written = tfds_io.TfdsSource(builder_dir, split=args.split)
    expected = len(source) - counter.total
    if len(written) != expected:
        raise RuntimeError(f"read back {len(written)} rows from {builder_dir}, expected {expected}")
    if len(written) and isinstance(written[0], Skipped):
        raise RuntimeError(f"cannot read back row 0 of {builder_dir}: {written[0]}")
    print(f"wrote {len(written)} rows to {builder_dir} (split {args.split});"
          f" skipped {counter.total}: {counter.counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
