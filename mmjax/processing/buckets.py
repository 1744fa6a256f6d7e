"""The one bucketing rule: sizes a run compiles for, so shapes repeat across batches.

Every padded size in mmjax (prompt lengths, completion lengths, vision patch rows, vision
tile counts) is `bucket_size(n)`: the smallest size >= n among 2^k and 3 * 2^(k-1)
(16, 24, 32, 48, 64, 96, ...), so at most a third of a bucket is padding and the number of
distinct shapes grows with log(n). A config may instead give an explicit list of sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bucket_size(n: int, minimum: int = 16, sizes: Sequence[int] | None = None) -> int:
    """The smallest bucket >= max(n, minimum): from `sizes` if given, else 2^k or 3 * 2^(k-1)."""
    n = max(int(n), int(minimum), 1)
    if sizes:
        fitting = [s for s in sorted(sizes) if s >= n]
        if not fitting:
            raise ValueError(f"{n} exceeds the largest bucket {max(sizes)} of {sorted(sizes)}")
        return int(fitting[0])
    power = 1 << (n - 1).bit_length()  # smallest 2^k >= n
    three_quarters = 3 * power // 4
    return three_quarters if three_quarters >= n and power >= 4 else power


def bucket_multiple(n: int, multiple: int, minimum: int = 16) -> int:
    """`bucket_size(n)` rounded up to a multiple of `multiple` (e.g. the vision merge unit)."""
    size = bucket_size(n, minimum)
    return -(-size // multiple) * multiple


def left_pad(x: np.ndarray, length: int, value, axis: int = -1) -> np.ndarray:
    """Pad `x` on the left of `axis` up to `length`."""
    axis = axis % x.ndim
    extra = length - x.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad an axis of size {x.shape[axis]} down to {length}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (extra, 0)
    return np.pad(x, widths, constant_values=value)
