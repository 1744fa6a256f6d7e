"""Length buckets, so a run compiles a handful of shapes instead of one per prompt length.

Buckets are 2^k and 3 * 2^(k-1) (16, 24, 32, 48, 64, 96, ...): at most a third of a bucket
is padding.
"""

from __future__ import annotations

import numpy as np


def bucket_length(n: int, minimum: int = 16) -> int:
    """The smallest bucket >= max(n, minimum)."""
    n = max(int(n), int(minimum), 1)
    power = 1 << (n - 1).bit_length()  # smallest 2^k >= n
    three_quarters = 3 * power // 4
    return three_quarters if three_quarters >= n and power >= 4 else power


def left_pad(x: np.ndarray, length: int, value, axis: int = -1) -> np.ndarray:
    """Pad `x` on the left of `axis` up to `length`."""
    axis = axis % x.ndim
    extra = length - x.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad an axis of size {x.shape[axis]} down to {length}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (extra, 0)
    return np.pad(x, widths, constant_values=value)

