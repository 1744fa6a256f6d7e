"""A job's jitted programs compiled for abstract inputs on the target mesh, with XLA's figures.

Each program is the job's own jitted function (the sampler's `_encode` / `_prefill` /
`_decode`, the learner's `microbatch_grads` and `apply_update`, GRPO's log-prob pass), lowered
with `jax.ShapeDtypeStruct`s that carry the shardings the job gives its arrays, and compiled:
nothing is allocated and no weight exists. `memory_analysis()` gives per-device argument,
output, alias and temporary bytes, `cost_analysis()` per-device FLOPs.

A program's peak adds the job's state that stays on the device while it runs (`Program.held`:
the params, the optimizer state while the sampler runs, the reference params, the running
gradient sum), so the largest peak is the job's.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax import sharding
from mmjax.models import sampler
from mmjax.models.capture import NUM_GROUPS
from mmjax.processing.buckets import bucket_size
from mmjax.train import update as update_lib


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled program's per-device figures (bytes), or why it did not compile.

    `held`: the job's state on the device while it runs, among its arguments or not (params,
    optimizer state, reference params, the running gradient sum). XLA leaves unused arguments
    out of `argument_bytes` (a vision encode takes only the ViT's params), so the peak counts
    the state whole from `held` and the program's other inputs (`other_input_bytes`, the
    batch, the KV cache it is given) at most as large as XLA's arguments.
    """
    name: str
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    flops: float = 0.0
    compile_seconds: float = 0.0
    held: tuple[tuple[str, int], ...] = ()
    other_input_bytes: int = 0
    error: str = ""

    @property
    def held_bytes(self) -> int:
        return sum(b for _, b in self.held)

    @property
    def input_bytes(self) -> int:
        return min(self.argument_bytes, self.other_input_bytes)

    @property
    def peak_bytes(self) -> int:
        """Held state, other inputs, outputs (less what aliases a donated argument) and temporaries."""
        return self.held_bytes + self.input_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    def consumers(self) -> list[tuple[str, int]]:
        """What its peak is made of, largest first."""
        parts = [*self.held, (f"inputs of '{self.name}'", self.input_bytes),
                 (f"outputs of '{self.name}'", self.output_bytes - self.alias_bytes),
                 (f"temporaries of '{self.name}'", self.temp_bytes)]
        return sorted([(what, b) for what, b in parts if b > 0], key=lambda p: -p[1])

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "held": dict(self.held), "peak_bytes": self.peak_bytes}


# Set to a list to keep (name, compiled, jitted, args, kwargs) of every program compiled, so a
# check can run them on real arrays (tools/bench/plan_check.py); None keeps nothing.
RECORD: list | None = None


def compile_program(name: str, jitted, *args, held=(), other_inputs=None, **kwargs):
    """(Program, compiled or None): `jitted` lowered for these abstract arguments and compiled.

    held: (what, bytes) of the job's state on the device meanwhile; other_inputs: the pytree of
    the arguments that are not that state."""
    held, other = tuple(held), device_bytes(other_inputs)
    try:
        lowered = jitted.lower(*args, **kwargs)
        start = time.perf_counter()
        compiled = lowered.compile()
        seconds = time.perf_counter() - start
    except Exception as e:  # noqa: BLE001  a program that cannot compile is a finding of the plan
        first = (str(e).strip().splitlines() or [""])[0]
        return Program(name, held=held, other_input_bytes=other, error=f"{type(e).__name__}: {first[:400]}"), None
    if RECORD is not None:
        RECORD.append((name, compiled, jitted, args, kwargs))
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return Program(name, argument_bytes=int(memory.argument_size_in_bytes),
                   output_bytes=int(memory.output_size_in_bytes), alias_bytes=int(memory.alias_size_in_bytes),
                   temp_bytes=int(memory.temp_size_in_bytes), flops=float(cost.get("flops", 0.0)),
                   compile_seconds=seconds, held=held, other_input_bytes=other), compiled


# ---- abstract arrays with the job's shardings ------------------------------------------------

def spec(shape, dtype, sharding=None) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=sharding)


def rows(shape, dtype, mesh, axis: int = 0) -> jax.ShapeDtypeStruct:
    """A per-row array split over the mesh's batch axes, as `sharding.global_rows` places it."""
    return spec(shape, dtype, None if mesh is None else sharding.batch_sharding(mesh, shape, axis))


def replicated(x, mesh):
    return None if x is None else spec(np.shape(x), np.asarray(x).dtype, None if mesh is None else
                                       NamedSharding(mesh, P()))


def prompt_arrays(batch: dict, mesh) -> dict:
    """The device part of a model batch: prompt arrays split by row, vision tables replicated."""
    out = {}
    for key, axis in sharding.BATCH_AXIS.items():
        a = np.asarray(batch[key])
        out[key] = rows(a.shape, a.dtype, mesh, axis)
    for key in ("image", "video"):
        out[key] = None if batch.get(key) is None else {k: replicated(v, mesh) for k, v in batch[key].items()}
    return out


def device_bytes(tree) -> int:
    """Bytes one device holds of a pytree of abstract arrays (its shard of each)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding_ = getattr(leaf, "sharding", None)
        shape = np.shape(leaf) if sharding_ is None else sharding_.shard_shape(leaf.shape)
        extended = jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended)
        itemsize = 8 if extended else np.dtype(leaf.dtype).itemsize  # a threefry key is 2 x uint32
        total += int(np.prod(shape)) * itemsize
    return total


def with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


# ---- the sampler: encode, prefill, decode ---------------------------------------------------

def sampler_programs(module, params, batch: dict, mesh, *, generations: int, max_new: int, sampling,
                     eos: tuple[int, ...], capture: bool = False, held=(), tag: str = "") -> list[Program]:
    """The rollout of one batch as `sampler.generate` runs it: each vision input encoded, the
    prompts prefilled, and the decode loop, for `generations` completions of `max_new` tokens."""
    merge = module.cfg.vision.spatial_merge_size
    prompts = prompt_arrays(batch, mesh)
    b, tp = batch["input_ids"].shape
    n = b * generations
    programs, embeds = [], {}
    for key in ("image", "video"):
        if prompts[key] is None:
            embeds[key] = None
            continue
        out_rows = bucket_size(batch[key]["pixel_values"].shape[0] // merge, 16)
        program, compiled = compile_program(f"{tag}encode {key}", sampler._encode, module, params, prompts[key],
                                            out_rows, held=held, other_inputs=prompts[key])
        programs.append(program)
        if compiled is None:
            return programs
        embeds[key] = with_shardings(jax.eval_shape(functools.partial(sampler._encode, module, rows=out_rows),
                                                    params, prompts[key]), compiled.output_shardings)
    groups = rows((b, tp, NUM_GROUPS), jnp.float32, mesh) if capture else None
    args = (params, prompts["input_ids"], prompts["positions"], prompts["attention_mask"], embeds["image"],
            embeds["video"], groups, rows((3, n, max_new), jnp.int32, mesh, 1), None,
            np.asarray(eos or (0,), np.int32), np.int32(0), np.uint32(0), None)
    kw = dict(sampling=sampling, num_generations=generations, max_new_tokens=max_new)
    program, compiled = compile_program(f"{tag}prefill", sampler._prefill, module, *args, held=held,
                                        other_inputs=args[1:], **kw)
    programs.append(program)
    if compiled is None:
        return programs
    state, consts = with_shardings(
        jax.eval_shape(lambda *a: sampler._prefill(module, *a, **kw), *args), compiled.output_shardings)
    program, _ = compile_program(f"{tag}decode", sampler._decode, module, params, state, consts,
                                 sampling=sampling, held=held, other_inputs=(state, consts))
    return programs + [program]


# ---- the learner: one micro-batch's gradients, and the update ----------------------------------

def learner_programs(params, micro, mesh, *, loss_fn, optimizer, freeze_vision: bool, freeze_merger: bool,
                     opt_state, held_grads=(), held_apply=(), base=None) -> list[Program]:
    """`microbatch_grads` of one micro-batch and `apply_update`, as the Trainer jits them (base: LoRA's
    frozen base params, `params` then the adapters)."""
    grads_program, compiled = compile_program(
        "update: grads of one micro-batch", update_lib.microbatch_grads, params, micro, base, loss_fn=loss_fn,
        freeze_vision=freeze_vision, freeze_merger=freeze_merger, mesh=mesh, held=held_grads, other_inputs=micro)
    if compiled is None:
        return [grads_program]
    grads = jax.tree.map(lambda p: spec(p.shape, p.dtype, p.sharding), params)
    apply = functools.partial(update_lib.apply_update, optimizer)
    if mesh is None:
        jitted = jax.jit(apply, donate_argnums=(0, 1))
    else:
        layouts = (jax.tree.map(lambda p: p.sharding, params), jax.tree.map(lambda o: o.sharding, opt_state),
                   NamedSharding(mesh, P()))
        jitted = jax.jit(apply, donate_argnums=(0, 1), out_shardings=layouts)
    apply_program, _ = compile_program("update: optimizer step", jitted, params, opt_state, grads,
                                       spec((), jnp.int32), held=held_apply, other_inputs=grads)
    return [grads_program, apply_program]
