"""Per-record random generators keyed by (seed, epoch, record index).

A task transform draws its randomness (jigsaw permutation, marker points) from
`record_rng(seed, epoch, index)`: the same record in the same epoch always gives
the same puzzle, a new epoch gives a new one, independently of shuffling,
sharding, worker count or where a restored iterator resumes.
"""

from __future__ import annotations

import numpy as np


def record_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """Returns a generator determined by (seed, epoch, index, stream).

    `stream` separates independent uses of the same record (e.g. two transforms).
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index), ("stream", stream)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
    entropy = np.random.SeedSequence([int(seed), int(epoch), int(index), int(stream)])
    return np.random.Generator(np.random.Philox(entropy))
