"""The one bucketing rule: sizes a run compiles for, so shapes repeat across batches.

Every padded size in mmjax (prompt lengths, completion lengths, vision patch rows, vision
tile counts) is `bucket_size(n)`, the smallest bucket >= n:
  * up to 256: 2^k and 3 * 2^(k-1) (16, 24, 32, 48, 64, 96, 128, 192, 256), two per
    octave: short shapes are cheap to pad, and every extra shape is a compile;
  * above 256: four per octave, 2^k * (1, 5/4, 3/2, 7/4) (320, 384, 448, 512, 640, ...):
    there the work is compute-bound and grows with the padded length, so padding is held
    to under a fifth of a bucket (a 290-token prompt of a 448 px image pads to 320, not
    384: 10% of the prefill instead of 32%).
The number of distinct shapes grows with log(n) either way. A config may instead give an
explicit list of sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# From here up, four buckets per octave instead of two.
FINE_BUCKETS_ABOVE = 256


def bucket_size(n: int, minimum: int = 16, sizes: Sequence[int] | None = None) -> int:
    """The smallest bucket >= max(n, minimum): from `sizes` if given, else the rule above."""
    n = max(int(n), int(minimum), 1)
    if sizes:
        fitting = [s for s in sorted(sizes) if s >= n]
        if not fitting:
            raise ValueError(f"{n} exceeds the largest bucket {max(sizes)} of {sorted(sizes)}")
        return int(fitting[0])
    power = 1 << (n - 1).bit_length()  # smallest 2^k >= n
    if n > FINE_BUCKETS_ABOVE:
        step = power // 8  # the octave (power/2, power] in four steps of power/8
        return -(-n // step) * step
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
