"""CMAB capture adds memory linear in the sequence length, never a [T, T] attention map.

Measured from XLA's compiled memory analysis of the prefill and the decode loop, with and
without capture, at two prompt lengths. The growth per prompt slot is bounded by what the
capture needs (its key-group table; in the prefill one cache-sized copy for the replayed
last position), which an implementation storing a probability row per generated token
exceeds several times over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.models import sampler
from mmjax.models.capture import NUM_GROUPS
from mmjax.models.sampling import SamplingParams

SHORT, LONG, MAX_NEW = 128, 512, 8
CHUNK = 64  # both lengths take the chunked-prefill path (2 and 8 chunks)


def _temp_bytes(module, params, length: int, capture: bool) -> tuple[int, int]:
    """Temporary buffer bytes of the compiled (prefill, decode loop) for one prompt of `length`."""
    spec = jax.ShapeDtypeStruct
    args = (params, spec((1, length), jnp.int32), spec((3, 1, length), jnp.int32), spec((1, length), bool),
            spec((16, module.cfg.vision.out_hidden_size), jnp.float32), None,
            spec((1, length, NUM_GROUPS), jnp.float32) if capture else None, spec((3, 1, MAX_NEW), jnp.int32), None,
            spec((1,), jnp.int32), spec((), jnp.int32), spec((), jnp.uint32))
    kw = dict(sampling=SamplingParams(), num_generations=1, max_new_tokens=MAX_NEW, prefill_chunk=CHUNK)
    pre = sampler._prefill.lower(module, *args, **kw).compile().memory_analysis().temp_size_in_bytes
    state, consts = jax.eval_shape(lambda *a: sampler._prefill(module, *a, **kw), *args)
    dec = sampler._decode.lower(module, params, state, consts, sampling=SamplingParams())
    return pre, dec.compile().memory_analysis().temp_size_in_bytes


def test_capture_memory_is_linear_in_length(pair):
    model = pair[1]
    module, params = model.module, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.params)
    without = {n: _temp_bytes(module, params, n, False) for n in (SHORT, LONG)}
    with_ = {n: _temp_bytes(module, params, n, True) for n in (SHORT, LONG)}
    text = module.cfg.text
    heads = text.num_attention_heads
    attention_map = lambda n: heads * n * n * 4  # one [heads, T, T] float32 map
    groups_per_slot = NUM_GROUPS * 4  # the key-group table, float32
    cache_per_slot = text.num_hidden_layers * 2 * text.num_key_value_heads * text.head_dim * 4
    # Storing a probability row per generated token would add max_new x layers x heads floats
    # per prompt slot: the decode bound below is a fraction of that.
    prob_rows_per_slot = MAX_NEW * text.num_hidden_layers * heads * 4
    per_slot_bound = (cache_per_slot + 2 * groups_per_slot, 2 * groups_per_slot)  # prefill, decode
    assert per_slot_bound[1] < prob_rows_per_slot / 4
    for part in (0, 1):  # prefill, decode loop
        added = {n: with_[n][part] - without[n][part] for n in (SHORT, LONG)}
        per_slot = (added[LONG] - added[SHORT]) / (LONG - SHORT)
        assert per_slot <= per_slot_bound[part], (part, per_slot, added)
        assert added[LONG] < attention_map(LONG) / 4, (part, added)
