"""Logical axis names -> a (data, fsdp, tensor) device mesh.

Parameters carry logical names (models/layers.py); this table decides where each goes.
Changing the parallelism is changing the mesh shape or this table, never the model.
A mesh axis that does not divide a dimension is dropped for that array (it is replicated
along that axis instead), so one table serves every model size and mesh.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# (logical axis, mesh axes). MaxText-style: weights' model dim over fsdp, the wide dims over
# tensor; activations' batch over data and fsdp.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
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


def logical_to_mesh(spec: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                    rules=DEFAULT_RULES) -> P:
    """PartitionSpec for an array of `shape` whose dims carry the logical names in `spec`."""
    table = dict(rules)
    if spec is None:
        return P()
    out, used = [], set()
    for name, dim in zip(spec, shape):
        axes = table.get(name) if name is not None else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        kept, size = [], 1
        for a in axes:
            if a in used or dim % (size * mesh.shape[a]):
                continue
            kept.append(a)
            size *= mesh.shape[a]
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def param_shardings(abstract, logical_specs, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedSharding for every parameter, from its shape and its logical PartitionSpec."""
    return jax.tree.map(
        lambda a, spec: NamedSharding(mesh, logical_to_mesh(spec, a.shape, mesh, rules)),
        abstract, logical_specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, shape: Sequence[int], batch_axis: int = 0, rules=DEFAULT_RULES) -> NamedSharding:
    """Shard dimension `batch_axis` of an activation over the batch mesh axes (where they divide it)."""
    spec = [None] * len(shape)
    spec[batch_axis] = "batch"
    return NamedSharding(mesh, logical_to_mesh(spec, shape, mesh, rules))
