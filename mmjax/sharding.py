"""Logical axis names -> a (data, fsdp, tensor) device mesh.

Parameters carry logical names (models/layers.py, the decoder's SelfAttention), activations
carry them through `nn.with_logical_constraint`; one rule table decides where each goes.
Changing the parallelism is changing the mesh shape or this table, never the model.

  - Parameters: `param_shardings` (and `Qwen2_5_VL.shard`, `load_hf(mesh=...)`).
  - Activations: the models' constraints bind inside `activation_rules(mesh)`; outside it
    they are no-ops (GSPMD then propagates from the parameter and input shardings alone).
  - Batches: `batch_sharding` for one array, `global_batch` for a whole model batch made by
    each process from its own rows.

A mesh axis must divide every dimension the table asks it to shard: `logical_to_mesh`
raises ShardingError naming the tensor, the dimension and the mesh axis otherwise (rather
than quietly replicating, which would hide that a model no longer fits as planned). Change
the mesh shape or the table instead (e.g. ("kv_heads", None) for a model with fewer KV heads
than the tensor axis). A mesh axis shards at most one dimension of an array: a dimension
whose rule names an axis an earlier dimension took is not sharded over it (so activations
[batch, length, embed] shard batch over (data, fsdp) and keep embed whole), as in Flax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

Rules = Sequence[tuple[str, "str | tuple[str, ...] | None"]]

# (logical axis, mesh axes). MaxText-style: weights' model dim over fsdp, the wide dims (whole
# attention heads, MLP hidden, vocabulary) over tensor; activations' batch over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("norm", None),
    ("vit_patch", None),
    ("vit_embed", "fsdp"),
    ("vit_qkv", "tensor"),
    ("vit_heads", "tensor"),
    ("vit_mlp", "tensor"),
    ("vit_merge", "fsdp"),
    ("vit_merge_out", "tensor"),
)

# Model-batch entries whose leading (or, for positions, second) axis is the batch.
_BATCH_AXIS = {"input_ids": 0, "attention_mask": 0, "positions": 1, "rope_deltas": 0}
_VISION = ("image", "video")


class ShardingError(ValueError):
    """A rule table asks a mesh axis to shard a dimension it does not divide."""


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A mesh over all (or the given) devices; one of the sizes may be -1 (the rest)."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                         f"have {len(devices)}")
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _rule_axes(table: dict, name: str | None) -> tuple[str, ...]:
    axes = table.get(name) if name is not None else None
    return (axes,) if isinstance(axes, str) else tuple(axes or ())


def logical_to_mesh(spec: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                    rules: Rules = DEFAULT_RULES, name: str = "array") -> P:
    """PartitionSpec for an array of `shape` whose dims carry the logical names in `spec`.

    Raises ShardingError if a mesh axis the rules name does not divide its dimension; `name`
    (the parameter path, the batch entry) is what the error calls the array.
    """
    if spec is None:
        return P()
    if len(spec) != len(shape):
        raise ShardingError(f"{name}: {len(spec)} logical axes {tuple(spec)} for an array of shape {tuple(shape)}")
    table = dict(rules)
    out, used = [], set()
    for i, (logical, dim) in enumerate(zip(spec, shape)):
        kept, size = [], 1
        for a in _rule_axes(table, logical):
            if a in used:
                continue  # another dimension of this array is sharded over it
            if a not in mesh.shape:
                raise ShardingError(f"{name}: rule {logical!r} -> {a!r} names no axis of the mesh {dict(mesh.shape)}")
            size *= mesh.shape[a]
            if dim % size:
                over = " x ".join(f"{b!r} ({mesh.shape[b]})" for b in (*kept, a)) + " = " if kept else ""
                raise ShardingError(
                    f"{name}: dimension {i} ({logical!r}, size {dim}) of shape {tuple(shape)} cannot be "
                    f"sharded over mesh axis {a!r} (size {mesh.shape[a]}): {over}{size} devices do not "
                    f"divide {dim}; use a mesh shape that does, or a rule table that does not shard "
                    f"{logical!r} over {a!r}")
            kept.append(a)
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_shardings(abstract, logical_specs, mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """NamedSharding for every parameter, from its shape and its logical PartitionSpec."""
    return jax.tree_util.tree_map_with_path(
        lambda path, a, spec: NamedSharding(mesh, logical_to_mesh(spec, a.shape, mesh, rules, _path_name(path))),
        abstract, logical_specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, shape: Sequence[int], batch_axis: int = 0, rules: Rules = DEFAULT_RULES,
                   name: str = "batch array") -> NamedSharding:
    """Shard dimension `batch_axis` of an activation over the batch mesh axes (which must divide it)."""
    spec = [None] * len(shape)
    spec[batch_axis] = "batch"
    return NamedSharding(mesh, logical_to_mesh(spec, shape, mesh, rules, name))


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[Mesh]:
    """Make the models' `nn.with_logical_constraint` calls bind to `mesh` through `rules`.

    Trace (first call) jitted model functions inside it. It sets `mesh` as JAX's current mesh
    (`jax.set_mesh`, so the constraints' PartitionSpecs resolve) and `rules` as Flax's logical
    axis rules; both are thread-local and restored on exit.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield mesh


def _process_local_rows(mesh: Mesh, axes: tuple[str, ...]) -> tuple[int, int]:
    """(shards of the batch held by this process's devices, shards in all) over mesh `axes`."""
    names = list(mesh.axis_names)
    me = jax.process_index()
    local = set()
    for index in np.ndindex(mesh.devices.shape):
        if mesh.devices[index].process_index == me:
            local.add(tuple(index[names.index(a)] for a in axes))
    return len(local), int(np.prod([mesh.shape[a] for a in axes]))


def _global_array(name: str, local: np.ndarray, axis: int, mesh: Mesh, rules: Rules) -> jax.Array:
    local = np.asarray(local)
    spec = [None] * local.ndim
    spec[axis] = "batch"
    batch_axes = tuple(a for a in _rule_axes(dict(rules), "batch") if a in mesh.shape)
    held, total = _process_local_rows(mesh, batch_axes)
    if local.shape[axis] % held:
        raise ShardingError(
            f"global_batch: {name} has {local.shape[axis]} rows (axis {axis}) on process {jax.process_index()}, "
            f"whose devices hold {held} of the {total} shards over mesh axes {batch_axes} "
            f"{dict((a, mesh.shape[a]) for a in batch_axes)}; each process needs a multiple of {held} rows")
    global_shape = list(local.shape)
    global_shape[axis] = local.shape[axis] // held * total
    sharding = NamedSharding(mesh, logical_to_mesh(spec, global_shape, mesh, rules, f"global_batch {name}"))
    return jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))


def global_batch(batch: dict[str, Any], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict[str, Any]:
    """Each process's local model batch (`mmjax.processing.model_batch`) -> global jax.Arrays.

    input_ids, attention_mask, rope_deltas (batch axis 0) and positions (batch axis 1) become
    arrays of all processes' rows, sharded over the "batch" rule's mesh axes; process p's rows
    come in process order. The vision dicts (image / video) are replicated as they are: their
    pixel rows and index tables index the process's own rows, so they cannot be concatenated
    across processes; with more than one process a batch holding them raises
    NotImplementedError (until the tables are made global). Other entries pass through.
    """
    out = dict(batch)
    for key, axis in _BATCH_AXIS.items():
        if batch.get(key) is not None:
            out[key] = _global_array(key, batch[key], axis, mesh, rules)
    for key in _VISION:
        if batch.get(key) is None:
            continue
        if jax.process_count() > 1:
            raise NotImplementedError(
                f"global_batch: the {key!r} entry (pixel rows and index tables of this process's samples) "
                f"cannot be made global across {jax.process_count()} processes yet; the tables index "
                "process-local rows. Use one process, or batches without images / videos")
        replicated = NamedSharding(mesh, P())
        out[key] = {k: jax.device_put(np.asarray(v), replicated) for k, v in batch[key].items()}
    return out
