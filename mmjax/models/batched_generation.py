"""Answers over items in fixed-size batches, shared by scoring, eval and the demo.

Every sampler call gets the same rows (a short last batch is padded with copies of its last
row, whose answers are dropped), so the sampler compiles once per shape bucket; a host
thread builds batch i + 1 while the device samples batch i.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
C = TypeVar("C")
B = TypeVar("B")
R = TypeVar("R")
_END = object()


def chunks(items: Iterable[T], size: int) -> list[list[T]]:
    """`items` cut into lists of `size`, in order; the last one may be shorter."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def pad_rows(rows: Sequence[T], size: int) -> list[T]:
    """`rows` filled up to `size` with copies of the last row."""
    if not rows or len(rows) > size:
        raise ValueError(f"need 1 to {size} rows to pad, got {len(rows)}")
    return list(rows) + [rows[-1]] * (size - len(rows))


def _next_built(chunks: Iterator[C], build: Callable[[C], B]) -> tuple[Any, B | None]:
    chunk = next(chunks, _END)
    return (chunk, None) if chunk is _END else (chunk, build(chunk))


def generate_batches(chunks: Iterable[C], build: Callable[[C], B],
                     generate: Callable[[int, C, B], R]) -> Iterator[tuple[int, C, R]]:
    """(index, chunk, generate(index, chunk, build(chunk))) for each chunk, in order.

    `chunks` is iterated and `build` called on one host thread, one chunk ahead of `generate`;
    exceptions from either are raised here, in chunk order.
    """
    chunks = iter(chunks)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="build-batch") as builder:
        pending = builder.submit(_next_built, chunks, build)
        index = 0
        while True:
            chunk, batch = pending.result()
            if chunk is _END:
                return
            pending = builder.submit(_next_built, chunks, build)
            yield index, chunk, generate(index, chunk, batch)
            index += 1
