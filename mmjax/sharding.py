"""Logical axis names -> a (data, fsdp, tensor) device mesh.

Parameters carry logical names (models/layers.py, the decoder's SelfAttention), activations
carry them through `nn.with_logical_constraint`; one rule table decides where each goes.
Changing the parallelism is changing the mesh shape or this table, never the model.

  - Parameters: `param_shardings` (and `Qwen2_5_VL.shard`, `load_hf(mesh=...)`).
  - Activations: the models' constraints bind inside `activation_rules(mesh)`; outside it
    they are no-ops (GSPMD then propagates from the parameter and input shardings alone).
  - Batches: `batch_sharding` for one array, `global_batch` for a whole model batch made by
    each process from its own rows (`process_batch` first makes the processes' local batches
    agree: one prompt length, one set of vision tables); `global_rows` / `host_local` carry
    per-row arrays between a process's host and the global arrays.
  - Several processes (`jax.distributed`): the host helpers `allgather_arrays` /
    `allgather_json` let every process see what the others computed on their hosts
    (rewards, metrics, data iterator states), in process order.

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
BATCH_AXIS = {"input_ids": 0, "attention_mask": 0, "positions": 1, "rope_deltas": 0}
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

    Trace (first call) jitted model functions inside it: the jobs run their sampler, log-prob
    and update calls in it, so a micro-batch's rows are split over the batch axes in every layer
    (without it GSPMD, seeing embed dims sharded over fsdp, kept every row on every device: the
    7B update's activations 8x over on fsdp=8, found by mmjax.jobs.plan). It sets `mesh` as JAX's current mesh
    (`jax.set_mesh`, so the constraints' PartitionSpecs resolve) and `rules` as Flax's logical
    axis rules; both are thread-local and restored on exit.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield mesh


def batch_axes_in_context() -> tuple[str, ...]:
    """The mesh axes (of size > 1) the "batch" rule splits rows over, in the mesh and rules
    `activation_rules` set; () outside one. For kernels GSPMD cannot partition (a Pallas call,
    blockwise attention's loops), which then run per device on its rows (`jax.shard_map`)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    table = dict(nn.get_logical_axis_rules()) or dict(DEFAULT_RULES)
    return tuple(a for a in _rule_axes(table, "batch") if mesh.shape.get(a, 1) > 1)


def maybe_activation_rules(mesh: Mesh | None):
    """`activation_rules(mesh)`, or nothing without a mesh (one device)."""
    return activation_rules(mesh) if mesh is not None else contextlib.nullcontext()


# ---- several processes: host exchanges, per-row arrays, global batches ---------------------

def allgather_arrays(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every process's `arrays`, in process order (a list of dicts; one process: [arrays]).

    Host numpy arrays of any shape: each process passes the same names, each name with the
    same ndim and dtype on every process, the shapes may differ. A header of the shapes goes
    first, then one flat buffer a dtype, padded to a bucketed length (so few programs compile).
    Every process must call it at the same point of the program, as any collective.
    """
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    if jax.process_count() == 1:
        return [arrays]
    from jax.experimental import multihost_utils
    from mmjax.processing.buckets import bucket_size
    names = sorted(arrays)
    header = np.concatenate([[arrays[k].ndim, *arrays[k].shape] for k in names] or [[0]]).astype(np.int64)
    heads = np.asarray(multihost_utils.process_allgather(header))  # [P, H]: same ndims, so same H
    shapes = []  # per process: name -> shape
    for head in heads:
        at, mine = 0, {}
        for k in names:
            ndim = int(head[at])
            mine[k] = tuple(int(d) for d in head[at + 1:at + 1 + ndim])
            at += 1 + ndim
        shapes.append(mine)
    out: list[dict[str, np.ndarray]] = [{} for _ in heads]
    for dtype in sorted({arrays[k].dtype.str for k in names}):
        group = [k for k in names if arrays[k].dtype.str == dtype]
        wire = np.uint8 if np.dtype(dtype) == np.bool_ else np.dtype(dtype)
        sizes = [[int(np.prod(s[k])) for k in group] for s in shapes]
        length = bucket_size(max(sum(s) for s in sizes), minimum=16)
        flat = np.zeros(length, wire)
        mine = np.concatenate([arrays[k].astype(wire).ravel() for k in group])
        flat[:mine.size] = mine
        gathered = np.asarray(multihost_utils.process_allgather(flat))  # [P, length]
        for p, row in enumerate(gathered):
            at = 0
            for k, size in zip(group, sizes[p]):
                out[p][k] = row[at:at + size].astype(np.dtype(dtype)).reshape(shapes[p][k])
                at += size
    return out


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-serialisable `value`, in process order."""
    import json
    data = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
    return [json.loads(bytes(p["json"]).decode()) for p in allgather_arrays({"json": data})]


def _process_local_rows(mesh: Mesh, axes: tuple[str, ...]) -> tuple[int, int]:
    """(shards of the batch held by this process's devices, shards in all) over mesh `axes`."""
    names = list(mesh.axis_names)
    me = jax.process_index()
    local = set()
    for index in np.ndindex(mesh.devices.shape):
        if mesh.devices[index].process_index == me:
            local.add(tuple(index[names.index(a)] for a in axes))
    return len(local), int(np.prod([mesh.shape[a] for a in axes]))


def local_batch_shards(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> int:
    """The batch shards this process's devices hold: `global_rows` needs a multiple of it rows a process."""
    return _process_local_rows(mesh, tuple(a for a in _rule_axes(dict(rules), "batch") if a in mesh.shape))[0]


def global_rows(local: np.ndarray, mesh: Mesh, axis: int = 0, rules: Rules = DEFAULT_RULES,
                name: str = "array") -> jax.Array:
    """This process's rows (dimension `axis`) -> the global array of all processes' rows.

    Sharded over the "batch" rule's mesh axes; process p's rows land on its own devices, so the
    global row order is the process order (each process's devices hold a contiguous block of
    the batch shards on meshes made by `make_mesh`). One process: `device_put` to that sharding.
    """
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


def _local_part(x, mesh: Mesh, axis: int) -> np.ndarray:
    if jax.process_count() == 1 or not isinstance(x, jax.Array) or x.ndim <= axis:
        return np.asarray(x)
    want = batch_sharding(mesh, x.shape, axis)  # the layout `global_rows` gave the rows
    spans = sorted({(index[axis].start or 0, x.shape[axis] if index[axis].stop is None else index[axis].stop)
                    for index in want.addressable_devices_indices_map(x.shape).values()})
    if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
        raise ShardingError(f"host_local: process {jax.process_index()} holds rows {spans} of an array of shape "
                            f"{x.shape}: not one contiguous block (mesh {dict(mesh.shape)})")
    mine = (slice(None),) * axis + (slice(spans[0][0], spans[-1][1]),)
    if x.is_fully_replicated:  # GSPMD may replicate a small output: every process has all rows
        return np.asarray(x)[mine]
    if not x.sharding.is_equivalent_to(want, x.ndim):  # e.g. also split a column dimension
        x = jax.device_put(x, want)
    pieces: dict[int, np.ndarray] = {}
    for shard in x.addressable_shards:
        pieces.setdefault(shard.index[axis].start or 0, np.asarray(shard.data))
    return np.concatenate([pieces[s] for s in sorted(pieces)], axis=axis)


def host_local(tree, mesh: Mesh, axis: int = 0):
    """numpy copies of this process's rows (dimension `axis`) of every array in `tree`.

    The inverse of `global_rows`: a process reads back the rows it put in (its prompts'
    completions, say), whatever layout the program gave them. Scalars come back whole, and
    so does everything on one process.
    """
    return jax.tree.map(lambda x: _local_part(x, mesh, axis), tree)


_EMPTY_VISION = {"pixel_values": 2, "patch_order": 1, "rope_pos": 2, "window_gather": 2, "window_segment": 2,
                 "window_scatter": 1, "frame_gather": 2, "frame_segment": 2, "frame_scatter": 1,
                 "merged_order": 1}  # key -> ndim, for a process whose batch has no images / videos


def _left_pad(x: np.ndarray, length: int, value, axis: int) -> np.ndarray:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (length - x.shape[axis], 0)
    return np.pad(x, widths, constant_values=value)


def process_batch(batch: dict[str, Any], pad_token_id: int = 0) -> dict[str, Any]:
    """This process's model batch, made to agree with every other process's (one process: as is).

    Prompt arrays stay on the host, left-padded to the longest prompt length of all processes
    (with `pad_token_id`, mask False, position 0), so a sampler or `global_batch` lays them side
    by side. Each vision entry (image / video) becomes one table for the images of all
    processes (`vision_tables.join_tables`: pixel rows and index tables gathered, re-padded to
    common buckets, indices offset), as numpy on every process; a process without images
    contributes padding. The embeddings it yields come in global row order, process by process.
    """
    if jax.process_count() == 1:
        return batch
    from mmjax.processing.vision_tables import join_tables
    ids = np.asarray(batch["input_ids"])
    present = [batch.get(k) is not None for k in _VISION]
    heads = allgather_arrays({"length": np.asarray([ids.shape[1]]), "vision": np.asarray(present)})
    length = max(int(h["length"][0]) for h in heads)
    out = dict(batch)
    for key, axis, value in (("input_ids", 1, pad_token_id), ("attention_mask", 1, False), ("positions", 2, 0)):
        out[key] = _left_pad(np.asarray(batch[key]), length, value, axis)
    for j, key in enumerate(_VISION):
        has = [bool(h["vision"][j]) for h in heads]
        if not any(has):
            continue
        mine = batch[key] if present[j] else {
            k: np.zeros((0,) * ndim, np.float32 if k == "pixel_values" else np.int32)
            for k, ndim in _EMPTY_VISION.items()}
        parts = allgather_arrays({k: mine[k] for k in _EMPTY_VISION})
        out[key] = join_tables([p if h else None for p, h in zip(parts, has)])
    return out


def global_batch(batch: dict[str, Any], mesh: Mesh, rules: Rules = DEFAULT_RULES,
                 pad_token_id: int = 0) -> dict[str, Any]:
    """Each process's local model batch (`mmjax.processing.model_batch`) -> global jax.Arrays.

    input_ids, attention_mask, rope_deltas (batch axis 0) and positions (batch axis 1) become
    arrays of all processes' rows, sharded over the "batch" rule's mesh axes; process p's rows
    come in process order. The vision dicts (image / video) are replicated; with several
    processes they are first joined into one table for all processes' images
    (`process_batch`, which also pads every process's prompts to one length with
    `pad_token_id`). Other entries pass through.
    """
    out = process_batch(batch, pad_token_id)
    for key, axis in BATCH_AXIS.items():
        if out.get(key) is not None:
            out[key] = global_rows(out[key], mesh, axis, rules, key)
    replicated = NamedSharding(mesh, P())
    for key in _VISION:
        if out.get(key) is not None:
            out[key] = {k: jax.device_put(np.asarray(v), replicated) for k, v in out[key].items()}
    return out
