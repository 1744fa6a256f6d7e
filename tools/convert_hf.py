"""Convert a Hugging Face Qwen2.5-VL folder into an mmjax Orbax checkpoint.

    python tools/convert_hf.py --hf_dir path/to/Qwen2.5-VL-7B-Instruct --out ckpt/qwen7b

Tensors are read one at a time and kept in the checkpoint's own dtype unless --dtype is
given (bf16 stays bf16), so peak memory is about one copy of the model. The HF key layout
and the tokenizer / processor files travel with the checkpoint (CKPT/hf_assets/), so
tools/export_hf.py can write the folder back. With --overwrite the new checkpoint is
written beside the old one and swapped in by renames: a kill at any point leaves the
complete old or the complete new checkpoint (see checkpoints.save_model).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

from mmjax.models.qwen2_5_vl import hf
from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.api import SIDE_FILES
from mmjax.train import checkpoints

DTYPES = ("bfloat16", "float32", "float16")


def convert(hf_dir: str, out: str, dtype: str | None = None, overwrite: bool = False,
            progress: bool = True) -> str:
    """HF folder -> Orbax checkpoint at `out`; returns the checkpoint path."""
    if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"--hf_dir {hf_dir}: no such directory")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of {DTYPES}")
    checkpoints.check_out_dir(out, hf_dir, overwrite)
    config = Qwen25VLConfig.from_pretrained(hf_dir)
    # safetensors' flax reader makes jax arrays: keep them on the host, not an accelerator.
    with jax.default_device(jax.devices("cpu")[0]):
        params, layout = hf.load_params(hf_dir, config, dtype=None if dtype is None else _np_dtype(dtype),
                                        progress=progress)
    if dtype is not None:
        config = config.replace(dtype=dtype)  # config.json must state the dtype export will write
    assets = {name: os.path.join(hf_dir, name) for name in SIDE_FILES
              if os.path.isfile(os.path.join(hf_dir, name))}
    return checkpoints.save_model(out, params, config, layout, assets=assets, overwrite=overwrite)


def _np_dtype(name: str) -> np.dtype:
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hf_dir", required=True, help="HF folder: config.json + model*.safetensors")
    parser.add_argument("--out", required=True, help="checkpoint directory to create")
    parser.add_argument("--dtype", choices=DTYPES, default=None,
                        help="cast parameters (default: keep the checkpoint's own dtype)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out (once the new checkpoint is complete)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        path = convert(args.hf_dir, args.out, args.dtype, args.overwrite, not args.no_progress)
    except (ValueError, OSError) as e:  # CheckpointError / ConfigError are ValueErrors
        sys.exit(f"convert_hf: error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
