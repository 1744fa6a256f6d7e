"""Hugging Face safetensors folders <-> mmjax parameter pytrees for Qwen2.5-VL: the file side.

Reading (`load_params`) and writing (`save_safetensors`) go tensor by tensor, each tensor
mapped by `hf_keys`; the key layout read is returned so it can be written back. An export
replaces its folder as a whole (`replace_folder`, built on `mmjax.atomic_dir`), and refuses
a folder holding anything an export does not write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ml_dtypes  # noqa: F401  registers bfloat16 with numpy, so safetensors reads bf16 as numpy
import numpy as np
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from mmjax import atomic_dir
from mmjax.models.qwen2_5_vl import hf_keys
from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.hf_keys import CheckpointError


# ---- files -----------------------------------------------------------------------------

def safetensors_files(hf_dir: str) -> dict[str, str]:
    """key -> file for every tensor of the checkpoint in hf_dir (single file or index)."""
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(index):
        files = {k: os.path.join(hf_dir, v) for k, v in _read_weight_map(index).items()}
        missing = sorted({f for f in files.values() if not os.path.exists(f)})
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {missing}")
        return files
    if os.path.exists(single):
        try:
            with safe_open(single, "np") as f:
                return {k: single for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{single}: not a readable safetensors file ({e})") from e
    raise CheckpointError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json")


def _read_weight_map(index: str) -> dict[str, str]:
    """The index's weight_map, checked to be an object of tensor name -> shard file name."""
    try:
        with open(index) as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index}: unreadable index ({e!r})") from e
    if not isinstance(doc, dict):
        raise CheckpointError(f"{index}: must hold a JSON object, got {type(doc).__name__}")
    if "weight_map" not in doc:
        raise CheckpointError(f"{index}: field weight_map is missing")
    weight_map = doc["weight_map"]
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: weight_map must be an object of tensor name -> shard file name, "
                              f"got {type(weight_map).__name__} {weight_map!r:.60}")
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{index}: weight_map[{key!r}] must be a shard file name (a string), "
                                  f"got {type(name).__name__} {name!r:.60}")
    return weight_map


def _is_floating(dtype: np.dtype) -> bool:
    import jax  # knows ml_dtypes' bfloat16 / float8, which numpy does not call floating
    return bool(jax.dtypes.issubdtype(dtype, np.floating))


def iter_hf_tensors(hf_dir: str, progress: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, numpy array) one tensor at a time, bf16 kept as ml_dtypes.bfloat16."""
    files = safetensors_files(hf_dir)
    by_file: dict[str, list[str]] = {}
    for k, f in files.items():
        by_file.setdefault(f, []).append(k)
    bar = tqdm(total=len(files), desc="reading safetensors", unit="tensor", disable=not progress)
    for path, keys in sorted(by_file.items()):
        try:
            with safe_open(path, "np") as f:
                present = set(f.keys())
                for k in sorted(keys):
                    if k not in present:
                        raise CheckpointError(f"{path}: tensor {k!r} listed in the index is missing")
                    yield k, np.asarray(f.get_tensor(k))
                    bar.update()
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from e
    bar.close()


def expected_shapes(cfg: Qwen25VLConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """mmjax leaf path -> shape, from an abstract init (no memory, no compute)."""
    from flax import traverse_util
    from mmjax.models.qwen2_5_vl.params import abstract_params
    flat = traverse_util.flatten_dict(abstract_params(cfg))
    return {k: tuple(v.shape) for k, v in flat.items()}


def load_params(hf_dir: str, cfg: Qwen25VLConfig, dtype=None, progress: bool = True,
                place: Callable[[tuple[str, ...], np.ndarray], Any] | None = None):
    """Read an HF checkpoint into a nested dict of numpy arrays; returns (params, layout).

    place(path, array) -> leaf, when given, receives each tensor as soon as it is read,
    converted and cast (e.g. to put it on its devices), and its result is kept instead: the
    host copy is dropped before the next tensor is read, so the checkpoint never sits in host
    memory whole.
    """
    from flax import traverse_util
    shapes = expected_shapes(cfg)
    keys = safetensors_files(hf_dir)
    layout = hf_keys.detect_layout(keys)
    flat: dict[tuple[str, ...], Any] = {}
    for key, array in iter_hf_tensors(hf_dir, progress):
        if cfg.tie_word_embeddings and key == "lm_head.weight":
            continue  # tied: the head is the embedding
        path, kind = hf_keys.hf_key_to_path(key, layout)
        if path not in shapes:
            raise CheckpointError(f"{keys[key]}: tensor {key!r} has no place in a model with this "
                                  f"config.json (mapped to {'/'.join(path)})")
        if not _is_floating(array.dtype):  # a cast to float would hide a wrong or quantized file
            raise CheckpointError(f"{keys[key]}: tensor {key!r} has dtype {array.dtype}; every "
                                  "Qwen2.5-VL parameter is floating point (float32 / bfloat16 / float16)")
        if hf_keys.mmjax_shape(kind, array.shape, cfg) != shapes[path]:
            implied = hf_keys.hf_shape_of(kind, shapes[path], cfg)
            raise CheckpointError(f"{keys[key]}: tensor {key!r} has shape {tuple(array.shape)}, config.json "
                                  f"implies {tuple(implied)}")
        value = hf_keys.to_mmjax(kind, array, cfg)
        del array  # with `place`, the converted tensor must be the only host copy left
        value = value if dtype is None else value.astype(dtype, copy=False)
        flat[path] = value if place is None else place(path, value)
        del value
    missing = sorted(hf_keys.path_to_hf_key(p, layout)[0] for p in shapes if p not in flat)
    if missing:
        raise CheckpointError(f"{hf_dir}: checkpoint lacks {len(missing)} tensors that config.json "
                              f"implies, e.g. {missing[:5]}")
    return traverse_util.unflatten_dict(flat), layout


def iter_params_as_hf(params, cfg: Qwen25VLConfig, layout: str = hf_keys.HUB_LAYOUT):
    """Yield (hf_key, numpy array) for every leaf of an mmjax params tree."""
    from flax import traverse_util
    for path, value in traverse_util.flatten_dict(params).items():
        key, kind = hf_keys.path_to_hf_key(path, layout)
        yield key, hf_keys.to_hf(kind, np.asarray(value), cfg)


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)\s*", size.upper().replace("IB", "iB"))
    if not m:
        raise ValueError(f"max_shard_size={size!r}: use bytes or e.g. '5GB', '500MB'")
    mult = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    return int(float(m.group(1)) * mult[m.group(2)])


def save_safetensors(tensors: Iterator[tuple[str, np.ndarray]], out_dir: str,
                     max_shard_size: int | str = "5GB", progress: bool = True) -> list[str]:
    """Write tensors as model.safetensors, or as shards + index above max_shard_size.

    Shards are written to temporary names and renamed once complete, so an interrupted
    export never leaves a file that looks finished. This writes *into* out_dir and leaves
    whatever else is there (an older index would still win on load): to replace an export,
    build it with `replace_folder`.
    """
    from safetensors.numpy import save_file
    limit = _parse_size(max_shard_size)
    os.makedirs(out_dir, exist_ok=True)
    shard: dict[str, np.ndarray] = {}
    shard_bytes = 0
    tmp_names: list[str] = []
    weight_map: dict[str, int] = {}  # key -> shard number
    total = 0

    def flush() -> None:
        name = os.path.join(out_dir, f".tmp-shard-{len(tmp_names):05d}.safetensors")
        save_file(shard, name, metadata={"format": "pt"})
        os.chmod(name, 0o644)  # safetensors writes 0600; save_pretrained's files are world-readable
        tmp_names.append(name)

    bar = tqdm(desc="writing safetensors", unit="tensor", disable=not progress)
    for key, arr in tensors:
        if shard and shard_bytes + arr.nbytes > limit:
            flush()
            shard, shard_bytes = {}, 0  # drop the written tensors before reading more
        shard[key] = arr
        shard_bytes += arr.nbytes
        total += arr.nbytes
        weight_map[key] = len(tmp_names)
        bar.update()
    flush()
    bar.close()
    n = len(tmp_names)
    if n == 1:
        final = [os.path.join(out_dir, "model.safetensors")]
        os.replace(tmp_names[0], final[0])
        return final
    final = [os.path.join(out_dir, f"model-{i + 1:05d}-of-{n:05d}.safetensors") for i in range(n)]
    for tmp, dst in zip(tmp_names, final):
        os.replace(tmp, dst)
    index = {"metadata": {"total_size": total},
             "weight_map": {k: os.path.basename(final[i]) for k, i in sorted(weight_map.items())}}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return final


def write_generation_config(cfg: Qwen25VLConfig, out_dir: str, extra: dict[str, Any] | None = None):
    t = cfg.text
    gen = {"bos_token_id": t.bos_token_id,
           "eos_token_id": list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id,
           "pad_token_id": t.pad_token_id}
    gen.update(extra or {})
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)



# ---- an export folder, replaced as a whole ----------------------------------------------

_EXPORT_FILE = re.compile(r"model(?:-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json"
                          r"|config\.json|generation_config\.json|\.tmp-shard-\d{5}\.safetensors")


def check_replaceable(out_dir: str, side_files: Iterable[str]) -> None:
    """Refuse an out_dir holding anything an HF export does not write (a README, a subfolder).

    Replacing such a folder would delete those files; keeping them beside new weights would
    mix two models. Allowed: safetensors + index, config.json, generation_config.json and
    `side_files` (tokenizer / processor files).
    """
    if not os.path.lexists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder; cannot write an HF export there")
    side = set(side_files)
    unexpected = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(out_dir)
                        if not e.is_file(follow_symlinks=False)
                        or not (e.name in side or _EXPORT_FILE.fullmatch(e.name)))
    if unexpected:
        raise FileExistsError(f"{out_dir}: holds files an HF export does not write: {unexpected[:10]}; "
                              "replacing the folder would delete them: move them away or export elsewhere")


def replace_folder(out_dir: str, write: Callable[[str], Any], side_files: Iterable[str]) -> list[str]:
    """Build an HF folder with `write(staging_dir)` beside out_dir, then swap it in whole.

    out_dir may be absent, empty or a previous HF export (see `check_replaceable`); nothing of
    the old export survives (no stale shards or index). A failed or killed `write` leaves
    out_dir as it was. Returns the names of the files in the new out_dir.
    """
    out_dir = os.path.realpath(out_dir)
    atomic_dir.recover_replace(out_dir)
    check_replaceable(out_dir, side_files)
    tmp = atomic_dir.staging_path(out_dir)
    os.makedirs(tmp)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_dir.replace_path(tmp, out_dir)
    return sorted(os.listdir(out_dir))
