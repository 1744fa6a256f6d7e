"""Export an mmjax Orbax checkpoint (converted or a training step) as a Hugging Face folder.

    python tools/export_hf.py --ckpt ckpt/qwen7b --out hf/qwen7b [--max_shard_size 5GB]
    python tools/export_hf.py --ckpt workdir/checkpoints/1000 --out hf/step1000 --tokenizer_dir D
    python tools/export_hf.py --ckpt C --out hf/x --push_to_hub user/name [--private] [--dry_run]

Writes model.safetensors (or shards + model.safetensors.index.json above
--max_shard_size), config.json, generation_config.json and the tokenizer / processor
files kept in CKPT/hf_assets/ (or taken from --tokenizer_dir). Tensors keep their
checkpoint dtype and the HF key layout the model was converted from. The folder is
assembled under a temporary name and renamed when complete.

--push_to_hub REPO_ID then uploads the finished folder with huggingface_hub (the repo is
created if missing; the token comes from HF_TOKEN or `hf auth login`); with --dry_run it
lists the files and their sizes instead and uploads nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
from flax import traverse_util

from mmjax.models.qwen2_5_vl import CheckpointError, hf
from mmjax.models.qwen2_5_vl.api import SIDE_FILES
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
        raise CheckpointError(f"{ckpt}: params do not match its model_config: missing {missing[:5]}, "
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


def folder_files(folder: str) -> list[tuple[str, int]]:
    """(path relative to folder, size in bytes) of every file under it, sorted by path."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found.append((os.path.relpath(path, folder), os.path.getsize(path)))
    return sorted(found)


def check_repo_id(repo_id: str) -> None:
    """A malformed repo id fails now, not after a long export (HFValidationError is a ValueError)."""
    from huggingface_hub.utils import validate_repo_id
    validate_repo_id(repo_id)


def push_to_hub(folder: str, repo_id: str, private: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
    """Upload `folder` to the model repo `repo_id` (created if missing); dry_run only lists it."""
    files = folder_files(folder)
    total = sum(size for _, size in files)
    verb = "would upload" if dry_run else "uploading"
    print(f"{verb} {len(files)} files ({total:,} bytes) from {folder} to {repo_id}:")
    for name, size in files:
        print(f"{size:>16,}  {name}")
    if dry_run:
        return files
    from huggingface_hub import HfApi
    api = HfApi()
    # private=None keeps the hub's default for a new repo and never changes an existing one
    url = api.create_repo(repo_id, repo_type="model", exist_ok=True, private=True if private else None)
    api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                      commit_message=f"Upload {os.path.basename(os.path.normpath(folder))} with mmjax export_hf")
    print(f"pushed to {url}")
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="Orbax checkpoint (convert_hf output or a training step)")
    parser.add_argument("--out", required=True, help="HF folder to create")
    parser.add_argument("--max_shard_size", default="5GB", help="shard above this size, e.g. 5GB, 500MB")
    parser.add_argument("--tokenizer_dir", default=None,
                        help="take tokenizer/processor files from here instead of CKPT/hf_assets")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", default=None,
                        help="then upload --out to this Hugging Face model repo (created if missing)")
    parser.add_argument("--private", action="store_true", help="with --push_to_hub: create the repo private")
    parser.add_argument("--dry_run", action="store_true",
                        help="with --push_to_hub: list the files and sizes it would upload, upload nothing")
    args = parser.parse_args(argv)
    if (args.dry_run or args.private) and not args.push_to_hub:
        parser.error("--dry_run and --private need --push_to_hub REPO_ID")
    size = int(args.max_shard_size) if args.max_shard_size.isdigit() else args.max_shard_size
    try:
        if args.push_to_hub:
            check_repo_id(args.push_to_hub)
        files = export(args.ckpt, args.out, size, args.tokenizer_dir, args.overwrite, not args.no_progress)
    except (ValueError, OSError) as e:  # CheckpointError / ConfigError / HFValidationError are ValueErrors
        sys.exit(f"export_hf: error: {e}")
    print(f"wrote {args.out}: {', '.join(files)}")
    if args.push_to_hub:
        from huggingface_hub.errors import HTTPError
        try:
            push_to_hub(args.out, args.push_to_hub, args.private, args.dry_run)
        except (ValueError, OSError, HTTPError) as e:  # hub HTTP errors are OSErrors; connection ones are not
            sys.exit(f"export_hf: error: push of {args.out} to {args.push_to_hub} failed (the export is "
                     f"complete; rerun the upload with `hf upload {args.push_to_hub} {args.out}`): {e}")


if __name__ == "__main__":
    main()
