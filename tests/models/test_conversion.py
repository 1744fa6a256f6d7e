"""HF -> Orbax -> HF conversion (tools/convert_hf.py, tools/export_hf.py); transformers is the oracle."""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracle import build_hf_model, hf_logits, pad_batch, pixels, sample_ids
from safetensors.torch import load_file, save_file

from mmjax.models.qwen2_5_vl import CheckpointError, ConfigError, Qwen2_5_VL
from mmjax.train import checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_hf, export_hf = _tool("convert_hf"), _tool("export_hf")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def read_tensors(hf_dir: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(hf_dir)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(hf_dir, name)))
    return out


def to_module_layout(hf_dir: str) -> None:
    """Rename keys to transformers 5's module layout (model.visual.*, model.language_model.*)."""
    path = os.path.join(hf_dir, "model.safetensors")
    renamed = {}
    for key, value in load_file(path).items():
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("model."):
            key = "model.language_model." + key[len("model."):]
        renamed[key] = value
    save_file(renamed, path, metadata={"format": "pt"})


def assert_bit_equal(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
    assert sorted(out) == sorted(src)
    for key, a in src.items():
        b = out[key]
        assert (b.dtype, b.shape) == (a.dtype, a.shape), key
        assert torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)), key


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """(dtype, tied) -> (folder in the hub layout as save_pretrained writes it, torch model)."""
    made = {}

    def get(dtype: str, tie: bool):
        if (dtype, tie) not in made:
            path = str(tmp_path_factory.mktemp(f"hf_{dtype}_{'tied' if tie else 'untied'}"))
            model = build_hf_model(path, seed=3 + tie, dtype=TORCH_DTYPES[dtype], tie=tie)
            made[dtype, tie] = path, model
        return made[dtype, tie]
    return get


def source(hf_dirs, tmp_path, dtype: str, tie: bool, layout: str) -> str:
    path, _ = hf_dirs(dtype, tie)
    if layout == "module":
        path = str(shutil.copytree(path, tmp_path / "src_module"))
        to_module_layout(path)
    return path


@pytest.mark.parametrize("dtype,tie,layout", [("float32", False, "hub"), ("float32", True, "module"),
                                              ("bfloat16", False, "module"), ("bfloat16", True, "hub")])
def test_round_trip_is_bit_exact(hf_dirs, tmp_path, dtype, tie, layout):
    src = source(hf_dirs, tmp_path, dtype, tie, layout)
    ckpt = convert_hf.convert(src, str(tmp_path / "ckpt"), progress=False)
    export_hf.export(ckpt, str(tmp_path / "out"), progress=False)
    src_tensors, out_tensors = read_tensors(src), read_tensors(str(tmp_path / "out"))
    assert all(t.dtype == TORCH_DTYPES[dtype] for t in out_tensors.values())  # bf16 stays bf16
    assert any(k.startswith("model.language_model.") for k in out_tensors) == (layout == "module")
    assert ("lm_head.weight" in out_tensors) == (not tie)
    assert_bit_equal(src_tensors, out_tensors)
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["dtype"] == dtype
    # side files travel through the checkpoint
    assert "generation_config.json" in os.listdir(os.path.join(ckpt, "hf_assets"))
    with open(os.path.join(src, "generation_config.json")) as a, open(tmp_path / "out" / "generation_config.json") as b:
        assert json.load(a) == json.load(b)


def test_dtype_flag_casts_and_states_it(hf_dirs, tmp_path):
    src, _ = hf_dirs("bfloat16", False)
    ckpt = convert_hf.convert(src, str(tmp_path / "ckpt"), dtype="float32", progress=False)
    export_hf.export(ckpt, str(tmp_path / "out"), progress=False)
    out = read_tensors(str(tmp_path / "out"))
    assert_bit_equal({k: v.float() for k, v in read_tensors(src).items()}, out)  # bf16 -> f32 is exact
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["dtype"] == "float32"


def test_tokenizer_and_processor_files_travel(hf_dirs, tmp_path):
    src = str(shutil.copytree(hf_dirs("float32", False)[0], tmp_path / "src"))
    for name in ("tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        (tmp_path / "src" / name).write_text(f"{name} of the source")
    ckpt = convert_hf.convert(src, str(tmp_path / "ckpt"), progress=False)
    export_hf.export(ckpt, str(tmp_path / "out"), progress=False)
    for name in ("tokenizer.json", "preprocessor_config.json", "chat_template.jinja"):
        assert (tmp_path / "out" / name).read_text() == f"{name} of the source"

    other = tmp_path / "tok"
    other.mkdir()
    (other / "tokenizer.json").write_text("another tokenizer")
    export_hf.export(ckpt, str(tmp_path / "out2"), tokenizer_dir=str(other), progress=False)
    assert (tmp_path / "out2" / "tokenizer.json").read_text() == "another tokenizer"
    assert not (tmp_path / "out2" / "preprocessor_config.json").exists()
    with open(tmp_path / "out2" / "generation_config.json") as f:  # written from config.json
        assert json.load(f)["eos_token_id"] == 1


@pytest.mark.parametrize("tie", [False, True])
def test_sharded_export_loads_in_transformers_with_same_logits(hf_dirs, tmp_path, tie):
    from transformers import Qwen2_5_VLForConditionalGeneration
    src, hf_model = hf_dirs("float32", tie)
    ckpt = convert_hf.convert(src, str(tmp_path / "ckpt"), progress=False)
    out = str(tmp_path / "out")
    export_hf.export(ckpt, out, max_shard_size="40KB", progress=False)

    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    shards = sorted(n for n in os.listdir(out) if n.endswith(".safetensors"))
    assert len(shards) > 3 and sorted(set(weight_map.values())) == shards
    assert sorted(weight_map) == sorted(read_tensors(src))

    rng = np.random.default_rng(0)
    grids = [(1, 4, 6)]
    ids, mask = pad_batch([sample_ids(rng, [5, 4], grids)])
    pv = pixels(rng, grids)
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager").eval()
    ref = hf_logits(hf_model, ids, mask, pv, grids)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_array_equal(hf_logits(reloaded, ids, mask, pv, grids), ref)

    # a sharded folder converts back to the same tensors
    again = convert_hf.convert(out, str(tmp_path / "ckpt2"), progress=False)
    export_hf.export(again, str(tmp_path / "out2"), progress=False)
    assert_bit_equal(read_tensors(src), read_tensors(str(tmp_path / "out2")))


def test_orbax_checkpoint_runs_in_mmjax_like_transformers(hf_dirs, tmp_path):
    src, hf_model = hf_dirs("float32", False)
    restored = checkpoints.restore_model(convert_hf.convert(src, str(tmp_path / "ckpt"), progress=False))
    model = Qwen2_5_VL(restored.config, restored.params, jnp.float32)
    rng = np.random.default_rng(1)
    grids = [(1, 4, 4)]
    ids, mask = pad_batch([sample_ids(rng, [6, 3], grids)])
    pv = pixels(rng, grids)
    ref = hf_logits(hf_model, ids, mask, pv, grids)
    assert np.abs(model.logits(ids, mask, pv, np.array(grids)) - ref).max() <= 1e-4


# ---- bad input -----------------------------------------------------------------------------

@pytest.fixture
def good(hf_dirs, tmp_path):
    return str(shutil.copytree(hf_dirs("float32", False)[0], tmp_path / "good"))


def _edit_tensors(hf_dir: str, edit) -> None:
    path = os.path.join(hf_dir, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _convert(hf_dir, tmp_path):
    return convert_hf.convert(hf_dir, str(tmp_path / "ckpt"), progress=False)


def test_missing_config(good, tmp_path):
    os.remove(os.path.join(good, "config.json"))
    with pytest.raises(FileNotFoundError, match=r"good/config\.json"):
        _convert(good, tmp_path)


def test_unsupported_architecture(good, tmp_path):
    path = os.path.join(good, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["architectures"] = ["LlavaForConditionalGeneration"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ConfigError, match=r"config\.json: architectures=\['LlavaForConditionalGeneration'\]"):
        _convert(good, tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_corrupt_safetensors(good, tmp_path, damage):
    path = os.path.join(good, "model.safetensors")
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(os.path.getsize(path) // 2)
        else:
            f.seek(8)
            f.write(b"\x00garbage" * 4)
    with pytest.raises(CheckpointError, match=r"good/model\.safetensors"):
        _convert(good, tmp_path)
    assert not os.path.exists(tmp_path / "ckpt")


def test_missing_tensor(good, tmp_path):
    _edit_tensors(good, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors.*'model\.layers\.1\.mlp\.up_proj\.weight'"):
        _convert(good, tmp_path)


def test_wrong_shape(good, tmp_path):
    def edit(t):
        t["visual.blocks.0.attn.qkv.weight"] = t["visual.blocks.0.attn.qkv.weight"][:, :-1].contiguous()
    _edit_tensors(good, edit)
    with pytest.raises(CheckpointError, match=r"good/model\.safetensors: tensor 'visual\.blocks\.0\.attn\.qkv\.weight' "
                                              r"has shape \(96, 31\), config\.json implies \(96, 32\)"):
        _convert(good, tmp_path)


def test_out_dir_must_be_empty_unless_overwrite(good, tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _convert(good, tmp_path)
    assert (out / "keep.txt").exists()
    with pytest.raises(ValueError, match="must not be, contain or lie inside"):
        convert_hf.convert(good, os.path.join(good, "ckpt"), progress=False)
    convert_hf.convert(good, str(out), overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and checkpoints.restore_model(str(out)).hf_layout == "hub"
    export_out = tmp_path / "hf"
    export_out.mkdir()
    (export_out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_hf.export(str(out), str(export_out), progress=False)


def test_cli_reports_errors_without_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"convert_hf: error: --hf_dir .*nowhere: no such directory"):
        convert_hf.main(["--hf_dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"), "--no_progress"])
    with pytest.raises(SystemExit, match=r"export_hf: error: .*nowhere: no such checkpoint directory"):
        export_hf.main(["--ckpt", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--no_progress"])


def test_export_checks_params_against_config(hf_dirs, tmp_path):
    restored = checkpoints.restore_model(_convert(hf_dirs("float32", False)[0], tmp_path))
    del restored.params["language_model"]["layers_1"]["mlp"]
    bad = checkpoints.save_model(str(tmp_path / "bad"), restored.params, restored.config)
    with pytest.raises(CheckpointError, match=r"bad: params do not match.*language_model/layers_1/mlp/down_proj/kernel"):
        export_hf.export(bad, str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")


# ---- streaming ---------------------------------------------------------------------------

_MEASURE = r"""
import json, sys, threading, time, importlib.util
import jax
def anon():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon"))
spec = importlib.util.spec_from_file_location("convert_hf", sys.argv[1])
tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
from mmjax.models.qwen2_5_vl import hf, Qwen25VLConfig
hf.expected_shapes(Qwen25VLConfig.from_pretrained(sys.argv[2]))  # warm up tracing and jax
peak, done = [0], []
def sample():
    while not done:
        peak[0] = max(peak[0], anon()); time.sleep(0.002)
base = anon()
thread = threading.Thread(target=sample); thread.start()
tool.convert(sys.argv[2], sys.argv[3], progress=False)
done.append(1); thread.join()
print(json.dumps({"base": base, "peak": peak[0]}))
"""


@pytest.mark.slow  # tools/convert_hf.py in a subprocess, its memory measured
def test_conversion_streams(tmp_path):
    """Peak anonymous memory while converting stays well below two copies of the model."""
    from flax import traverse_util

    from mmjax.models.qwen2_5_vl import hf, preset
    from mmjax.models.qwen2_5_vl.params import abstract_params
    cfg = preset("bench")
    cfg = cfg.replace(text=dataclasses.replace(cfg.text, num_hidden_layers=4))  # ~95 MB in float32
    rng = np.random.default_rng(0)
    shapes = traverse_util.flatten_dict(abstract_params(cfg))
    params = traverse_util.unflatten_dict({k: rng.standard_normal(v.shape, np.float32) for k, v in shapes.items()})
    size = sum(int(np.prod(v.shape)) * 4 for v in shapes.values())
    src = str(tmp_path / "src")
    hf.save_safetensors(hf.iter_params_as_hf(params, cfg), src, progress=False)
    cfg.save(src)
    del params
    # Real checkpoints' tensors exceed glibc's largest mmap threshold (32 MB), so each one is
    # returned to the OS when freed; this small model's would otherwise stay in per-thread
    # malloc arenas and blur the measurement. A fixed 1 MB threshold behaves like the real case.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20))
    res = subprocess.run([sys.executable, "-c", _MEASURE, os.path.join(ROOT, "tools", "convert_hf.py"), src,
                          str(tmp_path / "ckpt")], capture_output=True, text=True, check=True, env=env)
    mem = json.loads(res.stdout.strip().splitlines()[-1])
    growth = (mem["peak"] - mem["base"]) / size
    # Holding the params is 1x; Orbax's defaults (a defensive copy + OCDBT buffers) gave ~3x.
    assert 0.9 < growth < 1.75, f"peak growth {growth:.2f}x of a {size / 1e6:.0f} MB model"
