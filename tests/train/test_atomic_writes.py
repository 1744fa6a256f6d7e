"""Replacing a checkpoint or an HF export: a kill at any moment never leaves a mix of two versions."""

import importlib.util
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from mmjax import atomic_dir
from mmjax.models.qwen2_5_vl import CheckpointError, Qwen2_5_VL, hf, load_hf, preset
from mmjax.train import checkpoints

CFG = preset("tiny")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _params(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"language_model": {"embed_tokens": {"embedding": rng.standard_normal((16, 8), np.float32)},
                               "norm": {"scale": rng.standard_normal(8).astype(ml_dtypes.bfloat16)}},
            "visual": {"patch_embed": rng.standard_normal((12, 4), np.float32)}}


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so no `except Exception` cleanup runs."""


def _kill_at(monkeypatch, path: str, step: int) -> list[str]:
    """Make the `step`-th rename / delete of `path` or of a sibling named after it raise Killed
    before it happens (a delete first removes one entry, as a kill midway through would).
    Orbax's own renames inside its temporary directories are not counted. Returns the log."""
    name, log = os.path.basename(path), []
    real = {"rename": os.rename, "replace": os.replace, "rmtree": shutil.rmtree, "remove": os.remove}

    def ours(p) -> bool:
        base = os.path.basename(os.fspath(p))
        return base.startswith(name) and "orbax-checkpoint-tmp" not in base

    def wrap(op):
        def run(p, *args, **kw):
            if ours(p):
                if len(log) == step:
                    if op == "rmtree" and os.path.isdir(p):  # a kill midway through the delete
                        entries = sorted(os.listdir(p))
                        victim = checkpoints.HF_ASSETS if checkpoints.HF_ASSETS in entries else entries[0]
                        victim = os.path.join(p, victim)
                        real["rmtree"](victim) if os.path.isdir(victim) else real["remove"](victim)
                    raise Killed(f"{op} {os.path.basename(os.fspath(p))}")
                log.append(f"{op} {os.path.basename(os.fspath(p))}")
            return real[op](p, *args, **kw)
        return run

    for op, module in (("rename", os), ("replace", os), ("rmtree", shutil), ("remove", os)):
        monkeypatch.setattr(module, op, wrap(op))
    return log


# ---- model checkpoints -----------------------------------------------------------------------

@pytest.fixture
def assets(tmp_path):
    src = tmp_path / "assets"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"v": "A"}')
    return {"tokenizer.json": str(src / "tokenizer.json")}


def _complete(path: str, seed: int) -> bool:
    """Whether `path` restores to exactly the checkpoint saved with _params(seed) and assets."""
    model = checkpoints.restore_model(path)
    _assert_trees_equal(model.params, _params(seed))
    assert sorted(model.assets) == ["tokenizer.json"] and os.path.isfile(model.assets["tokenizer.json"])
    return True


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_a_killed_overwrite_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch, assets, step):
    root = tmp_path / "ckpts"
    root.mkdir()
    path = str(root / "ckpt")
    checkpoints.save_model(path, _params(1), CFG, assets=assets)
    with monkeypatch.context() as m:
        log = _kill_at(m, path, step)
        try:
            checkpoints.save_model(path, _params(2), CFG, assets=assets, overwrite=True)
            killed = False
        except Killed:
            killed = True
    assert killed == (step < 3), log  # the swap is three steps: aside, in, delete the old
    if os.path.lexists(path):
        assert _complete(path, 1 if step < 2 else 2)
    else:  # between the two renames: the old one is complete beside it, under a telling name
        assert step == 1
        with pytest.raises(CheckpointError, match=r"ckpt: missing; an interrupted overwrite left the previous "
                                                  r"checkpoint at .*ckpt\.old-\d+"):
            checkpoints.restore_model(path)
        atomic_dir.recover_replace(path)
        assert _complete(path, 1)
    # the next save cleans up whatever the killed one left
    checkpoints.save_model(path, _params(3), CFG, assets=assets, overwrite=True)
    assert _complete(path, 3)
    assert os.listdir(root) == ["ckpt"]


def test_a_killed_save_is_put_back_by_the_next_save_without_overwrite(tmp_path, monkeypatch, assets):
    path = str(tmp_path / "ckpt")
    checkpoints.save_model(path, _params(1), CFG, assets=assets)
    with monkeypatch.context() as m:
        _kill_at(m, path, 1)
        with pytest.raises(Killed):
            checkpoints.save_model(path, _params(2), CFG, assets=assets, overwrite=True)
    assert not os.path.exists(path)
    # the old checkpoint is back in place before the emptiness check, so it is not lost silently
    with pytest.raises(FileExistsError, match="not empty"):
        checkpoints.save_model(path, _params(2), CFG, assets=assets)
    assert _complete(path, 1)


@pytest.mark.parametrize("damage", ["commit_success.txt", "params/commit_success.txt", "hf_assets"])
def test_a_checkpoint_missing_a_commit_marker_or_an_item_does_not_restore(tmp_path, assets, damage):
    path = checkpoints.save_model(str(tmp_path / "ckpt"), _params(1), CFG, assets=assets)
    victim = os.path.join(path, damage)
    if os.path.isdir(victim):
        shutil.rmtree(victim)
    else:
        os.remove(victim)
    os.makedirs(path + ".replacement")  # what the old rmtree-then-rename overwrite left when killed
    expected = "hf_assets/" if damage == "hf_assets" else damage
    with pytest.raises(CheckpointError, match=rf"ckpt: incomplete checkpoint \(missing \[{expected!r}\]\).*"
                                              r"interrupted.*beside it: \['ckpt\.replacement'\]"):
        checkpoints.restore_model(path)
    with pytest.raises(CheckpointError, match="ckpt: incomplete checkpoint"):
        checkpoints.restore_params(path)
    checkpoints.save_model(path, _params(2), CFG, assets=assets, overwrite=True)
    assert _complete(path, 2) and not os.path.exists(path + ".replacement")


# ---- Hugging Face exports ----------------------------------------------------------------------

def _random_model(seed: int) -> Qwen2_5_VL:
    """Random float32 weights of the tiny config (no init: export only needs the shapes)."""
    rng = np.random.default_rng(seed)
    flat = {k: rng.standard_normal(shape, np.float32) for k, shape in hf.expected_shapes(CFG).items()}
    return Qwen2_5_VL(CFG, traverse_util.unflatten_dict(flat))


@pytest.fixture(scope="module")
def models():
    return _random_model(0), _random_model(1)


def _nbytes(model) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(model.params))


def _model_files(out: str) -> list[str]:
    return sorted(n for n in os.listdir(out) if n.endswith(".safetensors") or n.endswith(".index.json"))


def test_an_unsharded_export_replaces_a_sharded_one(tmp_path, models):
    a, b = models
    out = str(tmp_path / "hf")
    a.save_hf(out, max_shard_size=_nbytes(a) // 4, progress=False)
    assert "model.safetensors.index.json" in _model_files(out) and len(_model_files(out)) > 3
    (tmp_path / "hf" / "tokenizer.json").write_text("{}")  # a side file, as the demo job adds
    b.save_hf(out, progress=False)
    assert _model_files(out) == ["model.safetensors"]  # no stale shard or index
    _assert_trees_equal(load_hf(out, progress=False).params, b.params)
    assert sorted(os.listdir(tmp_path)) == ["hf"]


def test_an_export_refuses_a_folder_with_other_files(tmp_path, models):
    a, b = models
    out = tmp_path / "hf"
    a.save_hf(str(out), progress=False)
    (out / "README.md").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"hf: holds files an HF export does not write: \['README\.md'\]"):
        b.save_hf(str(out), progress=False)
    assert (out / "README.md").read_text() == "my notes"
    _assert_trees_equal(load_hf(str(out), progress=False).params, a.params)


@pytest.mark.parametrize("step", [0, 1, 2])
def test_a_killed_export_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch, models, step):
    a, b = models
    out = str(tmp_path / "hf")
    a.save_hf(out, max_shard_size=_nbytes(a) // 4, progress=False)
    with monkeypatch.context() as m:
        _kill_at(m, out, step)
        with pytest.raises(Killed):
            b.save_hf(out, progress=False)
    if os.path.lexists(out):
        _assert_trees_equal(load_hf(out, progress=False).params, (a if step < 2 else b).params)
    else:
        assert step == 1 and [n for n in os.listdir(tmp_path) if n.startswith("hf.old-")]
    b.save_hf(out, progress=False)  # cleans up after the killed one
    assert sorted(os.listdir(tmp_path)) == ["hf"] and _model_files(out) == ["model.safetensors"]
    _assert_trees_equal(load_hf(out, progress=False).params, b.params)


def test_export_hf_replaces_an_older_export_the_same_way(tmp_path, models):
    spec = importlib.util.spec_from_file_location("export_hf", os.path.join(ROOT, "tools", "export_hf.py"))
    export_hf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_hf)
    a, b = models
    out = str(tmp_path / "hf")
    a.save_hf(out, max_shard_size=_nbytes(a) // 4, progress=False)
    ckpt = checkpoints.save_model(str(tmp_path / "ckpt"), jax.tree.map(np.asarray, b.params), CFG)
    files = export_hf.export(ckpt, out, overwrite=True, progress=False)
    assert [f for f in files if f.endswith((".safetensors", ".json")) and f.startswith("model")] == \
        ["model.safetensors"]
    _assert_trees_equal(load_hf(out, progress=False).params, b.params)
    (tmp_path / "hf" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"holds files an HF export does not write: \['notes\.txt'\]"):
        export_hf.export(ckpt, out, overwrite=True, progress=False)
