"""Export an mmjax Orbax checkpoint (converted or a training step) as a Hugging Face folder.

    python tools/export_hf.py --ckpt ckpt/qwen7b --out hf/qwen7b [--max_shard_size 5GB]
    python tools/export_hf.py --ckpt workdir/checkpoints/1000 --out hf/step1000 --tokenizer_dir D

Writes model.safetensors (or shards + model.safetensors.index.json above
--max_shard_size), config.json, generation_config.json and the tokenizer / processor
files kept in CKPT/hf_assets/ (or taken from --tokenizer_dir). Tensors keep their
checkpoint dtype and the HF key layout the model was converted from. The folder is
assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
from flax import traverse_util

from mmjax.models.qwen2_5_vl import hf
from mmjax.models.qwen2_5_vl.holder import SIDE_FILES
from mmjax.train import checkpoints


def check_params(ckpt: str, params, config) -> None:
    """Every parameter the config implies is present with its shape, and nothing else."""
    expected = hf.expected_shapes(config)
    got = {p: tuple(np.shape(v)) for p, v in traverse_util.flatten_dict(params).items()}
    missing = sorted("/".join(p) for p in expected if p not in got)
    extra = sorted("/".join(p) for p in got if p not in expected)
    wrong = sorted(f"{'/'.join(p)}: {got[p]} != {expected[p]}" for p in expected
                   if p in got and got[p] != expected[p])
    if missing or extra or wrong:
        raise hf.CheckpointError(f"{ckpt}: params do not match its model_config: missing {missing[:5]}, "
                                 f"unexpected {extra[:5]}, wrong shape {wrong[:5]}")


def params_dtype(params) -> str | None:
    """The one floating dtype of all parameters, or None if they are mixed."""
    names = {np.dtype(v.dtype).name for v in traverse_util.flatten_dict(params).values()}
    return names.pop() if len(names) == 1 else None


def _drain_as_hf(flat: dict, config, layout: str):
    """HF tensors, dropping each parameter once converted so RAM holds about one model."""
    while flat:
        path, value = flat.popitem()
        yield from hf.iter_params_as_hf(traverse_util.unflatten_dict({path: value}), config, layout)
        del value


def export(ckpt: str, out: str, max_shard_size: int | str = "5GB", tokenizer_dir: str | None = None,
           overwrite: bool = False, progress: bool = True) -> list[str]:
    """Orbax checkpoint -> HF folder at `out`; returns the names of the files written."""
    if tokenizer_dir is not None and not os.path.isdir(tokenizer_dir):
        raise FileNotFoundError(f"--tokenizer_dir {tokenizer_dir}: no such directory")
    checkpoints.check_out_dir(out, ckpt, overwrite)
    hf.check_replaceable(os.path.realpath(out), SIDE_FILES)  # before the (long) restore
    model = checkpoints.restore_model(ckpt)
    check_params(ckpt, model.params, model.config)
    config, layout = model.config, model.hf_layout
    if (dtype := params_dtype(model.params)) is not None:
        config = config.replace(dtype=dtype)  # e.g. a float32 training run of a bf16 model
    if tokenizer_dir is not None:
        side = {n: os.path.join(tokenizer_dir, n) for n in SIDE_FILES
                if os.path.isfile(os.path.join(tokenizer_dir, n))}
    else:
        side = dict(model.assets)
    flat = traverse_util.flatten_dict(model.params)
    del model  # `flat` now holds the only reference to each array

    def write(tmp: str) -> None:
        hf.save_safetensors(_drain_as_hf(flat, config, layout), tmp, max_shard_size, progress)
        config.save(tmp)
        for name, src in side.items():
            shutil.copyfile(src, os.path.join(tmp, name))
        if "generation_config.json" not in side:
            hf.write_generation_config(config, tmp)

    return hf.replace_folder(out, write, SIDE_FILES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="Orbax checkpoint (convert_hf output or a training step)")
    parser.add_argument("--out", required=True, help="HF folder to create")
    parser.add_argument("--max_shard_size", default="5GB", help="shard above this size, e.g. 5GB, 500MB")
    parser.add_argument("--tokenizer_dir", default=None,
                        help="take tokenizer/processor files from here instead of CKPT/hf_assets")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    size = int(args.max_shard_size) if args.max_shard_size.isdigit() else args.max_shard_size
    try:
        files = export(args.ckpt, args.out, size, args.tokenizer_dir, args.overwrite, not args.no_progress)
    except (ValueError, OSError) as e:  # CheckpointError / ConfigError are ValueErrors
        sys.exit(f"export_hf: error: {e}")
    print(f"wrote {args.out}: {', '.join(files)}")


if __name__ == "__main__":
    main()
