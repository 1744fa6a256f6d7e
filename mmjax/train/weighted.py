"""Exact accumulation: every loss and metric is a (sum, count) pair, divided once at the end.

Splitting one optimizer step's rows into micro-batches and data-parallel shards and adding
the numerators, and separately the denominators, gives the full-batch value for any mean
(per token, per row, per fixed length): sum_k num_k / sum_k den_k. Gradients likewise: add
the gradients of the numerators, divide once by the summed denominator (Tunix's
GradientAccumulator). Counts are int32, so they add up exactly. `Max` is the one statistic
that is not a mean (e.g. the largest sampler-trainer log-prob drift): it accumulates by max.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Weighted(NamedTuple):
    """A sum and the count it is to be divided by, once, after all accumulation.

    A pytree: ``accumulate(a, b)`` adds two (or two whole dicts of them), ``jax.lax.psum``
    sums over devices.
    """

    total: jax.Array
    count: jax.Array

    def value(self) -> jax.Array:
        """total / count, 0 where count is 0 (every count here is an integer >= 0)."""
        total = jnp.asarray(self.total)
        # Integer sums (the clip-ratio counts) divide in the default float type.
        dtype = total.dtype if jnp.issubdtype(total.dtype, jnp.floating) else jnp.result_type(float)
        return total.astype(dtype) / jnp.maximum(jnp.asarray(self.count), 1).astype(dtype)


class Max(NamedTuple):
    """A statistic that accumulates by max, not by sum."""

    value_: jax.Array

    def value(self) -> jax.Array:
        return jnp.asarray(self.value_)


def _is_stat(x) -> bool:
    return isinstance(x, (Weighted, Max))


def accumulate(a, b):
    """Two pytrees of Weighted / Max (e.g. two micro-batches' stats) combined leaf by leaf;
    `a` may be None (the first micro-batch)."""
    if a is None:
        return b

    def combine(x, y):
        if isinstance(x, Max):
            return Max(jnp.maximum(x.value_, y.value_))
        return jax.tree.map(jnp.add, x, y)

    return jax.tree.map(combine, a, b, is_leaf=_is_stat)


def finalize(tree):
    """Every Weighted in ``tree`` -> total / count; every Max -> its value."""
    return jax.tree.map(lambda w: w.value(), tree, is_leaf=_is_stat)
