"""Orbax checkpoints of mmjax models and of training runs.

Two flavours share one on-disk item layout, so any of them can be exported to HF:

    model checkpoint (save_model, convert_hf)   training step  <workdir>/checkpoints/<step>/
      params/        array pytree               params/, opt_state/  (OCDBT array pytrees)
      model_config/  JSON: the HF config.json   model_config/, hf/
      hf/            JSON: HF key layout        data_state/  JSON: the data iterator's state
                                                             (each process's, when several)
                                                counters/    JSON: running totals (optional)
      hf_assets/     tokenizer/processor files, copied verbatim

Every save goes through Orbax's temporary directory + finalize (rename), so a directory
that exists under its final name is complete; an interrupted save leaves only a
`*.orbax-checkpoint-tmp*` directory, which restore reports and CheckpointManager cleans.
An overwrite builds the new checkpoint beside the old one and swaps it in by renames.
Restore checks Orbax's commit markers of the checkpoint and of every item it lists, so
a partly deleted checkpoint fails with "incomplete checkpoint" instead of loading.
Unreadable steps: `restore_newest`; dtypes and shardings: `restore_params`; several
processes: `TrainCheckpointer`; README "Long runs".
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Self, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mmjax import atomic_dir
from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl import hf
from mmjax.models.qwen2_5_vl.hf_keys import HUB_LAYOUT, MODULE_LAYOUT, CheckpointError

log = logging.getLogger(__name__)

PARAMS, MODEL_CONFIG, HF_META, HF_ASSETS = "params", "model_config", "hf", "hf_assets"
OPT_STATE, DATA_STATE, COUNTERS = "opt_state", "data_state", "counters"
FORMAT = "mmjax.qwen2_5_vl"
T = TypeVar("T")


# ---- an Orbax item holding a few files verbatim (tokenizer, processor config) ------------

@dataclasses.dataclass
class FilesSave(ocp.args.CheckpointArgs):
    files: Mapping[str, str]  # name in the checkpoint -> source path


@dataclasses.dataclass
class FilesRestore(ocp.args.CheckpointArgs):
    pass


class FilesHandler(ocp.CheckpointHandler):
    """Copies files into the item directory; restore returns {name: path in the checkpoint}."""

    def save(self, directory: epath.Path, args: FilesSave) -> None:
        if not ocp.utils.is_primary_host(0):
            return
        directory.mkdir(parents=True, exist_ok=True)
        for name, src in args.files.items():
            shutil.copyfile(src, os.fspath(directory / name))

    def restore(self, directory: epath.Path, args: FilesRestore | None = None) -> dict[str, str]:
        return {p.name: os.fspath(p) for p in sorted(directory.iterdir())
                if p.is_file() and p.name not in _ORBAX_BOOKKEEPING}

    def metadata(self, directory: epath.Path) -> None:
        return None


_COMMITTED, _METADATA = "commit_success.txt", "_CHECKPOINT_METADATA"  # Orbax's, see _check_finalized
_ORBAX_BOOKKEEPING = (_COMMITTED,)  # written by Orbax into every item directory

# item -> (handler class, save args, restore args)
_ITEMS = {
    PARAMS: (ocp.StandardCheckpointHandler, ocp.args.StandardSave, ocp.args.StandardRestore),
    OPT_STATE: (ocp.StandardCheckpointHandler, ocp.args.StandardSave, ocp.args.StandardRestore),
    MODEL_CONFIG: (ocp.JsonCheckpointHandler, ocp.args.JsonSave, ocp.args.JsonRestore),
    HF_META: (ocp.JsonCheckpointHandler, ocp.args.JsonSave, ocp.args.JsonRestore),
    DATA_STATE: (ocp.JsonCheckpointHandler, ocp.args.JsonSave, ocp.args.JsonRestore),
    COUNTERS: (ocp.JsonCheckpointHandler, ocp.args.JsonSave, ocp.args.JsonRestore),
    HF_ASSETS: (FilesHandler, FilesSave, FilesRestore),
}


def _streaming_params_handler() -> ocp.PyTreeCheckpointHandler:
    """Params writer for `save_model`, whose caller holds the only copy of a whole model.

    Orbax's defaults cost about a second copy of the model in RAM: numpy leaves are
    deep-copied before writing (a guard for async saves; `save_model` is synchronous) and
    the OCDBT driver buffers what it writes. Without both, peak memory stays near 1x.
    """
    types = (int, float, bytes, np.number, jax.Array, str)
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        *((t, ocp.type_handlers.get_type_handler(t)) for t in types))
    return ocp.PyTreeCheckpointHandler(use_ocdbt=False, type_handler_registry=registry)


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Every item this module writes, so Orbax knows each one (and does not warn about it)."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, (handler_cls, save_args, restore_args) in _ITEMS.items():
        handler = handler_cls()
        registry.add(item, save_args, handler)
        registry.add(item, restore_args, handler)
    registry.add(PARAMS, ocp.args.PyTreeSave, _streaming_params_handler())
    for item in (PARAMS, OPT_STATE):  # PyTreeRestore: restoring to host numpy arrays
        registry.add(item, ocp.args.PyTreeRestore, ocp.PyTreeCheckpointHandler())
    return registry


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(handler_registry=_registry()))


# ---- model checkpoints -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelCheckpoint:
    params: Any                    # nested dict; numpy on the host, or jax.Arrays if a target was given
    config: Qwen25VLConfig
    hf_layout: str                 # "hub" or "module": the key layout HF export writes
    assets: dict[str, str]         # tokenizer/processor file name -> path inside the checkpoint


def _model_items(params, config: Qwen25VLConfig, hf_layout: str,
                 streaming: bool = False) -> dict[str, ocp.args.CheckpointArgs]:
    if hf_layout not in (HUB_LAYOUT, MODULE_LAYOUT):
        raise ValueError(f"hf_layout={hf_layout!r}: expected {HUB_LAYOUT!r} or {MODULE_LAYOUT!r}")
    return {PARAMS: ocp.args.StandardSave(params) if not streaming else ocp.args.PyTreeSave(params),
            MODEL_CONFIG: ocp.args.JsonSave(config.to_hf_dict()),
            HF_META: ocp.args.JsonSave({"format": FORMAT, "layout": hf_layout})}


def save_model(path: str, params, config: Qwen25VLConfig, hf_layout: str = HUB_LAYOUT,
               assets: Mapping[str, str] | None = None, overwrite: bool = False) -> str:
    """Write params + config (+ tokenizer/processor files) as one Orbax checkpoint at `path`.

    assets: {file name: source path}. Leaves may be numpy or jax arrays; dtypes are kept.
    With overwrite, the new checkpoint is written beside the old one and swapped in by
    renames (`atomic_dir.replace_path`), so a kill at any moment leaves at `path` the complete old
    or the complete new checkpoint (or, between the two renames, nothing, with the old one
    at `<path>.old-<pid>`, which this function puts back on its next call).
    """
    path = os.path.realpath(path)
    atomic_dir.recover_replace(path)  # what a killed save left beside `path`
    replacing = os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path))
    if replacing and not overwrite:
        raise FileExistsError(f"{path}: exists and is not empty (pass overwrite=True / --overwrite)")
    if os.path.isdir(path) and not replacing:
        os.rmdir(path)  # Orbax creates the final directory itself, by renaming its temporary one
    missing = [src for src in (assets or {}).values() if not os.path.isfile(src)]
    if missing:
        raise FileNotFoundError(f"asset files to store in {path} do not exist: {missing}")
    items = _model_items(params, config, hf_layout, streaming=True)
    if assets:
        items[HF_ASSETS] = FilesSave(dict(assets))
    target = atomic_dir.staging_path(path) if replacing else path
    with _checkpointer() as ckptr:
        ckptr.save(target, ocp.args.Composite(**items), force=True)
    if replacing:
        atomic_dir.replace_path(target, path)
    return path


def _check_finalized(path: str) -> None:
    """A complete checkpoint is at `path`, or raise naming what is there instead.

    Orbax finalizes every directory it writes (the checkpoint and each item) by writing
    commit_success.txt into it last, and records the items in _CHECKPOINT_METADATA; a
    directory lacking any of these was not written to the end or was partly deleted.
    """
    if not (os.path.isdir(path) and ocp.utils.is_checkpoint_finalized(path)):
        _raise_missing(path)
    if not any(n in _ITEMS or n in (_COMMITTED, _METADATA) for n in os.listdir(path)):
        return  # nothing of a checkpoint: _require_item says so
    missing = [] if os.path.isfile(os.path.join(path, _COMMITTED)) else [_COMMITTED]
    meta_file = os.path.join(path, _METADATA)
    try:
        with open(meta_file) as f:
            items = sorted(json.load(f)["item_handlers"])
    except (OSError, ValueError, KeyError, TypeError):
        items = []
        missing.append(_METADATA)
    missing += [f"{item}/{_COMMITTED}" if os.path.isdir(os.path.join(path, item)) else f"{item}/"
                for item in items if not os.path.isfile(os.path.join(path, item, _COMMITTED))]
    if missing:
        olds, partial = atomic_dir.replace_leftovers(path)
        beside = f"; beside it: {[os.path.basename(p) for p in olds + partial]}" if olds or partial else ""
        raise CheckpointError(f"{path}: incomplete checkpoint (missing {missing}): its save was interrupted "
                              f"or it was partly deleted; save or convert it again{beside}")


def _raise_missing(path: str) -> None:
    parent, name = os.path.split(os.path.abspath(path))
    partial = [n for n in (os.listdir(parent) if os.path.isdir(parent) else [])
               if n.startswith(name + ".orbax-checkpoint-tmp")]
    olds, _ = atomic_dir.replace_leftovers(os.path.abspath(path))
    if olds and not os.path.lexists(path):
        raise CheckpointError(f"{path}: missing; an interrupted overwrite left the previous checkpoint at "
                              f"{olds[0]} (the next save to {path} puts it back, or rename it yourself)")
    if partial:
        raise CheckpointError(f"{path}: no finished checkpoint; found the unfinished save {partial[0]} "
                              "(the writer was interrupted: convert or save again)")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: not a finished Orbax checkpoint")
    raise FileNotFoundError(f"{path}: no such checkpoint directory")


def _require_item(path: str, item: str) -> None:
    if not os.path.isdir(os.path.join(path, item)):
        raise CheckpointError(f"{path}: item {item!r} is missing; not an mmjax model checkpoint")


def _read_json_item(path: str, item: str) -> dict:
    _require_item(path, item)
    with _checkpointer() as ckptr:
        return ckptr.restore(path, ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


def _restore_item(path: str, item: str, target=None):
    """One array item. target None: numpy arrays on the host, dtypes as stored (read straight
    into numpy: no device copy). Else a pytree of jax.ShapeDtypeStruct with .sharding."""
    with _checkpointer() as ckptr:
        if target is not None:
            args = ocp.args.StandardRestore(target)
        else:
            meta = ckptr.metadata(path).item_metadata[item]
            tree = meta.tree if hasattr(meta, "tree") else meta
            args = ocp.args.PyTreeRestore(restore_args=jax.tree.map(
                lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
        return ckptr.restore(path, ocp.args.Composite(**{item: args}))[item]


def restore_params(path: str, target=None):
    """The params of a model checkpoint or a training step.

    target: None restores numpy arrays on the host with their stored dtypes. A pytree of
    jax.ShapeDtypeStruct (with .sharding, e.g. NamedSharding) restores jax.Arrays placed
    directly on those shardings, cast to the target dtypes.
    """
    _check_finalized(path)
    _require_item(path, PARAMS)
    return _restore_item(path, PARAMS, target)


def restore_model(path: str, target=None) -> ModelCheckpoint:
    """Params, config and HF layout (and asset files, if any) of a checkpoint directory."""
    _check_finalized(path)
    meta = _read_json_item(path, HF_META)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{os.path.join(path, HF_META)}: format={meta.get('format')!r}, expected {FORMAT!r}")
    config = Qwen25VLConfig.from_hf_dict(_read_json_item(path, MODEL_CONFIG),
                                         source=os.path.join(path, MODEL_CONFIG))
    assets_dir = os.path.join(path, HF_ASSETS)
    assets = FilesHandler().restore(epath.Path(assets_dir)) if os.path.isdir(assets_dir) else {}
    return ModelCheckpoint(restore_params(path, target), config, meta["layout"], assets)


def check_out_dir(out: str, source: str, overwrite: bool, flag: str = "--out") -> None:
    """Refuse a non-empty `out` (unless overwrite) and any `out` that would clobber `source`.

    Puts back first what a killed save left beside `out` (`atomic_dir.recover_replace`), so the
    emptiness check sees the old version that the save was replacing.
    """
    out, source = os.path.realpath(out), os.path.realpath(source)
    if out == source or source.startswith(out + os.sep) or out.startswith(source + os.sep):
        raise ValueError(f"{flag} {out}: must not be, contain or lie inside the input {source}")
    atomic_dir.recover_replace(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not overwrite:
        raise FileExistsError(f"{flag} {out}: exists and is not empty (pass --overwrite to replace it)")


# ---- training runs -----------------------------------------------------------------------

class TrainState(NamedTuple):
    step: int
    params: Any
    opt_state: Any
    data_state: dict          # the data iterator's state (e.g. grain's get_state()), as JSON
    config: Qwen25VLConfig
    hf_layout: str
    counters: dict | None = None  # the learner's running totals (e.g. num_tokens), if it saved any


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class _LoopDecidesPreemption(ocp.CheckpointManager):
    """The training loop asks JAX's preemption service once per step
    (`mmjax.train.preemption.StopOnSignal.reached`) and forces the save of the step it stops
    at. Orbax's `should_save` would ask too, and the service counts calls, not steps: a
    second call per step could take the agreed stop for itself."""

    def reached_preemption(self, step: int) -> bool:
        return False


class TrainCheckpointer:
    """Saves {params, opt_state, data_state, config} every `save_every` steps, keeping the
    last `max_to_keep`. Saves are asynchronous: arrays are copied off the device before
    `save` returns and written in the background; call `wait()` (or close) before exit.

        with TrainCheckpointer(workdir, save_every=100) as ckpt:
            for step in ...:
                ckpt.save(step, params, opt_state, data_iter.get_state(), cfg)

    Several processes (`jax.distributed`): every process calls save and restore at the same
    steps; Orbax writes each process's shards of the arrays and finalizes once all are written.
    The data iterators differ per process, so a training step's data_state item holds
    {"per_process": [state of process 0, state of process 1, ...]} (gathered at save time),
    and each process restores its own; a run resumed with another process count is refused.
    """

    def __init__(self, workdir: str, save_every: int, max_to_keep: int | None = 3,
                 async_save: bool = True):
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=max_to_keep,
                                               enable_async_checkpointing=async_save, create=True)
        self.manager = _LoopDecidesPreemption(checkpoint_dir(workdir), options=options,
                                              handler_registry=_registry())

    def save(self, step: int, params, opt_state, data_state: Mapping[str, Any], config: Qwen25VLConfig,
             hf_layout: str = HUB_LAYOUT, force: bool = False, counters: Mapping[str, Any] | None = None) -> bool:
        """Save if `step` is a multiple of save_every (or force); returns whether it saved.

        counters: JSON numbers a resumed run continues from (the same on every process)."""
        if not (force or self.manager.should_save(step)):
            return False  # (before gathering the data states: that is a collective)
        items = _model_items(params, config, hf_layout)
        items[OPT_STATE] = ocp.args.StandardSave(opt_state)
        items[DATA_STATE] = ocp.args.JsonSave(_data_state_item(data_state))
        if counters:
            items[COUNTERS] = ocp.args.JsonSave(dict(counters))
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PER_PROCESS = "per_process"


def _data_state_item(data_state: Mapping[str, Any]) -> dict:
    """What the data_state item stores: the state itself, or every process's (process order)."""
    if jax.process_count() == 1:
        return dict(data_state)
    from mmjax.sharding import allgather_json
    return {PER_PROCESS: allgather_json(dict(data_state))}


def _own_data_state(item: dict, step_path: str) -> dict:
    """This process's data iterator state from a data_state item (see `_data_state_item`)."""
    count, me = jax.process_count(), jax.process_index()
    saved = len(item[PER_PROCESS]) if PER_PROCESS in item else 1
    if saved != count:
        raise CheckpointError(
            f"{os.path.join(step_path, DATA_STATE)}: written by {saved} process(es), but this run has {count}; "
            "each process's data iterator resumes from its own state, so resume with the same process count "
            "(or start a new workdir from these params)")
    return item[PER_PROCESS][me] if PER_PROCESS in item else item


def restore_latest(workdir: str, params_target=None, opt_state_target=None) -> TrainState | None:
    """The newest finished training checkpoint under workdir, or None if there is none.

    Targets as in `restore_params`. Without opt_state_target the optimizer state comes back
    as plain nested containers of host arrays; pass `jax.eval_shape(optimizer.init, params)`
    (with shardings) to get optax's own state types back. A newer step that cannot be read
    is skipped (see `restore_newest`) and moved aside to `<step>.corrupt`.
    """
    def read(step_path: str):
        model = restore_model(step_path, params_target)
        opt_state = _restore_item(step_path, OPT_STATE, opt_state_target)
        with _checkpointer() as ckptr:
            data_state = ckptr.restore(step_path, ocp.args.Composite(
                **{DATA_STATE: ocp.args.JsonRestore()}))[DATA_STATE]
        counters = _read_json_item(step_path, COUNTERS) if os.path.isdir(os.path.join(step_path, COUNTERS)) else {}
        return model, opt_state, data_state, counters

    found = restore_newest(checkpoint_dir(workdir), read, set_aside=True)
    if found is None:
        return None
    step, (model, opt_state, data_state, counters) = found
    step_path = os.path.join(checkpoint_dir(workdir), str(step))
    data_state = _own_data_state(data_state, step_path)  # a process-count mismatch is no fallback case
    return TrainState(step, model.params, opt_state, data_state, model.config, model.hf_layout, counters)


CORRUPT = "corrupt"  # a step that failed to restore is moved to <step>.corrupt (Orbax skips such names)


def restore_newest(directory: str, restore: Callable[[str], T], *,
                   set_aside: bool = False) -> tuple[int, T] | None:
    """(step, restore(step_path)) of the newest finished step under `directory` that restores,
    or None if there is no finished step (an interrupted save is a *.orbax-checkpoint-tmp*
    directory, not a step).

    Newest first: a step whose restore raises anything (a truncated array file surfaces as
    tensorstore's ValueError, not as CheckpointError) is logged as a warning naming it and
    why, and the one before is tried. If none restores, CheckpointError lists each failure
    and nothing is moved: when every step fails the cause is more likely the reader (another
    model config, too little memory) than the files.

    set_aside: once an older step has restored, move each newer one that failed to
    `<step>.corrupt` (`<step>.corrupt-2`, ...), so a later save of that step number, and
    Orbax's cleanup, do not meet a committed-looking step that cannot be read. Only for the
    run's own workdir: a workdir read for its params (init_from) belongs to another run.

    Several processes: all call this at the same point, since every process restores the same
    step. After each try they exchange their outcomes, so all fall back together and none
    resumes from another step than the rest. That exchange also means every process is done
    with the failed steps before process 0 renames them, and a barrier after the renames keeps
    any process from listing the steps (a CheckpointManager opening) while they move. Not
    covered: Orbax's restore ends in a collective barrier of its own, so a failure inside it
    on some processes only (a shard only they read) leaves the processes in different
    collectives; the usual damage (a file every process reads) fails on all of them alike.
    """
    if not os.path.isdir(directory):
        return None
    steps = sorted(ocp.utils.checkpoint_steps(directory), reverse=True)
    failures: list[tuple[str, str]] = []  # (step path, why)
    for i, step in enumerate(steps):
        step_path = os.path.join(directory, str(step))
        result, error = None, None
        try:
            result = restore(step_path)
        except Exception as e:  # noqa: BLE001  any unreadable checkpoint: fall back, loudly
            error = f"{type(e).__name__}: {str(e)[:300]}"
        error = _agreed_error(error)
        if error is None:
            if set_aside and failures:
                _set_aside_all([p for p, _ in failures])
            return step, result
        failures.append((step_path, error))
        log.warning("checkpoint %s cannot be restored (%s); %s", step_path, error,
                    f"falling back to the one before, step {steps[i + 1]}" if i + 1 < len(steps)
                    else "there is no older one")
    if failures:
        raise CheckpointError("no checkpoint under " + directory + " can be restored:\n  "
                              + "\n  ".join(f"{p}: {why}" for p, why in failures))
    return None


def _agreed_error(error: str | None) -> str | None:
    """This step's failure as all processes see it: the first failing process's reason, or None
    if every process restored it (one process: its own outcome)."""
    if jax.process_count() == 1:
        return error
    from mmjax.sharding import allgather_json
    errors = allgather_json(error)
    failed = [(p, e) for p, e in enumerate(errors) if e is not None]
    return f"on process {failed[0][0]}: {failed[0][1]}" if failed else None


def _set_aside_all(step_paths: list[str]) -> None:
    if jax.process_index() == 0:  # one writer: the step directories are shared by all processes
        for step_path in step_paths:
            _set_aside(step_path)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("mmjax: corrupt checkpoints set aside")


def _set_aside(step_path: str) -> None:
    target, n = f"{step_path}.{CORRUPT}", 1
    while os.path.lexists(target):  # an earlier corrupt save of the same step is kept too
        n += 1
        target = f"{step_path}.{CORRUPT}-{n}"  # as the score job names its parts set aside
    try:
        os.rename(step_path, target)
    except OSError as e:  # the run goes on from the older step; only a save of this step number may fail
        log.warning("could not move the unreadable checkpoint %s aside to %s (%s); move or delete it "
                    "before the run saves that step again", step_path, target, e)
        return
    log.warning("moved the unreadable checkpoint %s aside to %s (kept for inspection; delete it when done)",
                step_path, target)


# ---- the HF export a training job leaves --------------------------------------------------

HF_EXPORT = "hf_export"


def export_hf(workdir: str, model, savers=()) -> str:
    """Write the trained `model` (a Qwen2_5_VL) to <workdir>/hf_export as an HF folder,
    to evaluate or serve; returns its path.

    savers: objects with `save_pretrained(folder)` (the tokenizer, the image processor config)
    whose files go in beside the weights. Everything is built beside the folder and swapped in
    whole (`Qwen2_5_VL.save_hf`), so a killed export leaves the previous one, and a resumed
    run's export replaces the earlier one with nothing of it left over.

    Several processes: all must call this (params sharded across processes are gathered, a
    collective); process 0 alone writes, and all return once the folder is in place.
    """
    import tempfile
    from mmjax.models.qwen2_5_vl.api import SIDE_FILES, copy_side_files
    out_dir = os.path.join(os.path.abspath(workdir), HF_EXPORT)
    # On every process, before the collectives: a folder save_hf would refuse (a file of the
    # user's in it) then stops them all, not process 0 alone with the others left waiting.
    hf.check_replaceable(out_dir, SIDE_FILES)
    params = _params_on_process_0(model.params)
    if jax.process_index() == 0:
        # save_hf takes tokenizer / processor files from the model's source folder only, so
        # they are put in one (the model's own files first; this run's then replace them):
        # that way they are part of the same swap as the weights.
        with tempfile.TemporaryDirectory(prefix="mmjax-hf-export-") as side:
            copy_side_files(model.source_dir, side)
            for saver in savers:
                saver.save_pretrained(side)
            model.replace(params=params, source_dir=side).save_hf(out_dir, progress=False)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("mmjax: hf_export written")
    return out_dir


def _params_on_process_0(params):
    """params as save_hf can read them on process 0: arrays sharded across processes are
    gathered whole, one leaf at a time (every process joins each gather; only process 0
    keeps the copies, so the others need no host memory for a whole model)."""
    if jax.process_count() == 1:
        return params  # save_hf reads each leaf to the host as it writes it
    from jax.experimental import multihost_utils
    keep = jax.process_index() == 0

    def gather(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            a = multihost_utils.process_allgather(a, tiled=True)
        return a if keep else None

    return jax.tree.map(gather, params)
