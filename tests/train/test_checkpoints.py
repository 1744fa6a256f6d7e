"""Orbax checkpoints: model checkpoints (params + config + assets) and training runs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from mmjax.models.qwen2_5_vl import CheckpointError, preset
from mmjax.train import checkpoints

CFG = preset("tiny")


def _params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"language_model": {"embed_tokens": {"embedding": rng.standard_normal((16, 8), np.float32)},
                               "norm": {"scale": rng.standard_normal(8).astype(ml_dtypes.bfloat16)}},
            "visual": {"patch_embed": rng.standard_normal((12, 4), np.float32).astype(ml_dtypes.bfloat16)}}


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_checkpoint_round_trip(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"model": "tiny"}')
    proc = tmp_path / "preprocessor_config.json"
    proc.write_text('{"min_pixels": 3136}')
    params = _params()
    path = checkpoints.save_model(str(tmp_path / "ckpt"), params, CFG, "module",
                                  assets={"tokenizer.json": str(tok), "preprocessor_config.json": str(proc)})
    restored = checkpoints.restore_model(path)
    _assert_trees_equal(restored.params, params)  # values and dtypes: bf16 stays bf16
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(restored.params))
    assert restored.config == CFG and restored.hf_layout == "module"
    assert sorted(restored.assets) == ["preprocessor_config.json", "tokenizer.json"]
    with open(restored.assets["tokenizer.json"]) as f:
        assert f.read() == '{"model": "tiny"}'


def test_restore_into_a_target_sharding_and_dtype(tmp_path):
    params = _params()
    path = checkpoints.save_model(str(tmp_path / "ckpt"), params, CFG)
    mesh = jax.make_mesh((1,), ("fsdp",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=spec), params)
    restored = checkpoints.restore_params(path, target)
    for x, y in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        assert isinstance(x, jax.Array) and x.sharding == spec and x.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y, np.float32))


def _failing_save(monkeypatch, tmp_path, path, params, **kw):
    """save_model that dies once every item is written but before the checkpoint is finalized."""
    def crash(self, directory):
        raise RuntimeError("simulated crash")
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    with monkeypatch.context() as m:
        m.setattr(checkpoints.FilesHandler, "finalize", crash, raising=False)
        with pytest.raises(RuntimeError, match="simulated crash"):
            checkpoints.save_model(path, params, CFG, assets={"tokenizer.json": str(tok)}, **kw)


def test_an_interrupted_save_never_looks_complete(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt")
    _failing_save(monkeypatch, tmp_path, path, _params())
    assert not os.path.exists(path)
    with pytest.raises(CheckpointError, match=r"ckpt: no finished checkpoint; found the unfinished save ckpt\.orbax"):
        checkpoints.restore_model(path)

    # replacing a good checkpoint: the old one survives a failed save
    checkpoints.save_model(path, _params(1), CFG)
    _failing_save(monkeypatch, tmp_path, path, _params(2), overwrite=True)
    _assert_trees_equal(checkpoints.restore_params(path), _params(1))
    with pytest.raises(FileExistsError, match="not empty"):
        checkpoints.save_model(path, _params(2), CFG)
    with pytest.raises(FileNotFoundError, match="missing.json"):  # checked before anything is written
        checkpoints.save_model(path, _params(2), CFG, assets={"x": str(tmp_path / "missing.json")}, overwrite=True)
    checkpoints.save_model(path, _params(2), CFG, overwrite=True)
    _assert_trees_equal(checkpoints.restore_params(path), _params(2))


def test_restore_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such checkpoint directory"):
        checkpoints.restore_model(str(tmp_path / "nowhere"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="plain: item 'hf' is missing; not an mmjax model checkpoint"):
        checkpoints.restore_model(str(tmp_path / "plain"))
    with pytest.raises(CheckpointError, match="plain: item 'params' is missing"):
        checkpoints.restore_params(str(tmp_path / "plain"))


def _train_state(step: int):
    params = jax.tree.map(lambda x: jnp.asarray(x) * step, _params())
    optimizer = optax.adamw(1e-2)
    opt_state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = optimizer.update(grads, opt_state, params)
    return params, opt_state, optimizer


def test_training_checkpoints_every_n_steps_keep_the_last_k_and_resume(tmp_path):
    workdir = str(tmp_path / "run")
    assert checkpoints.restore_latest(workdir) is None
    with checkpoints.TrainCheckpointer(workdir, save_every=3, max_to_keep=2) as ckpt:
        saved = [s for s in range(1, 10)
                 if ckpt.save(s, *_train_state(s)[:2], {"epoch": 0, "index": 10 * s}, CFG, "module")]
    assert saved == [1, 3, 6, 9]  # the first step of a fresh run, then every 3rd
    assert sorted(ocp.utils.checkpoint_steps(checkpoints.checkpoint_dir(workdir))) == [6, 9]

    # an interrupted later save is not a checkpoint
    os.makedirs(os.path.join(checkpoints.checkpoint_dir(workdir), "12.orbax-checkpoint-tmp-7", "params"))
    params, opt_state, optimizer = _train_state(9)
    state = checkpoints.restore_latest(workdir, opt_state_target=jax.eval_shape(optimizer.init, params))
    assert state.step == 9 and state.data_state == {"epoch": 0, "index": 90}
    assert state.config == CFG and state.hf_layout == "module"
    _assert_trees_equal(state.params, params)
    _assert_trees_equal(state.opt_state, opt_state)  # optax's own state types come back
    assert isinstance(state.opt_state[0], optax.ScaleByAdamState)

    # without a target: the same leaves, on the host
    raw = checkpoints.restore_latest(workdir)
    for x, y in zip(jax.tree.leaves(raw.opt_state), jax.tree.leaves(opt_state)):
        np.testing.assert_array_equal(x, np.asarray(y))
    # a training step is also a model checkpoint (what export_hf reads)
    model = checkpoints.restore_model(os.path.join(checkpoints.checkpoint_dir(workdir), "9"))
    _assert_trees_equal(model.params, params)


_SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np, sys
from jax.sharding import NamedSharding, PartitionSpec as P
from mmjax.models.qwen2_5_vl import preset
from mmjax.train import checkpoints
assert len(jax.devices()) == 8
mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"))
x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
params = {"w": jax.device_put(jnp.asarray(x, jnp.bfloat16), NamedSharding(mesh, P("fsdp", "tensor")))}
with checkpoints.TrainCheckpointer(sys.argv[1], save_every=1) as ckpt:
    ckpt.save(5, params, {"mu": params["w"]}, {}, preset("tiny"))
target = {"w": jax.ShapeDtypeStruct((8, 16), jnp.bfloat16, sharding=NamedSharding(mesh, P("tensor", None)))}
state = checkpoints.restore_latest(sys.argv[1], params_target=target)
w = state.params["w"]
assert w.sharding == target["w"].sharding and w.dtype == jnp.bfloat16
assert {s.data.shape for s in w.addressable_shards} == {(2, 16)}
np.testing.assert_array_equal(np.asarray(w, np.float32), x)
np.testing.assert_array_equal(state.opt_state["mu"].astype(np.float32), x)  # host restore of a sharded save
print("SHARDED_OK")
"""


@pytest.mark.slow  # a subprocess with 8 devices
def test_sharded_save_and_restore_on_8_devices(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
    proc = subprocess.run([sys.executable, "-c", _SHARDED, str(tmp_path / "run")], env=env, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def _garble_params(step_path):
    """What tests/rl/test_learner.py does to a step: garbage over its params' array files."""
    for root, _, files in os.walk(os.path.join(step_path, "params")):
        for name in files:
            if not name.endswith(".txt") and "metadata" not in name:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")


def test_a_corrupt_newest_step_is_moved_aside_and_that_step_saved_again(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    directory = checkpoints.checkpoint_dir(workdir)
    with checkpoints.TrainCheckpointer(workdir, save_every=1, max_to_keep=2, async_save=False) as ckpt:
        for s in (1, 2):
            ckpt.save(s, *_train_state(s)[:2], {"index": s}, CFG)
    _garble_params(os.path.join(directory, "2"))

    state = checkpoints.restore_latest(workdir)
    assert state.step == 1 and state.data_state == {"index": 1}
    _assert_trees_equal(state.params, jax.tree.map(np.asarray, _train_state(1)[0]))
    assert sorted(os.listdir(directory)) == ["1", "2.corrupt"]  # moved aside, not deleted
    assert "cannot be restored" in caplog.text and os.path.join(directory, "2") + " " in caplog.text
    assert os.path.join(directory, "2.corrupt") in caplog.text
    assert ocp.utils.checkpoint_steps(directory) == [1]  # Orbax does not take it for a step

    # The resumed run saves step 2 again, then 3; the cleanup (max_to_keep=2) leaves 2.corrupt alone.
    with checkpoints.TrainCheckpointer(workdir, save_every=1, max_to_keep=2, async_save=False) as ckpt:
        assert ckpt.save(2, *_train_state(5)[:2], {"index": 5}, CFG)
        assert ckpt.save(3, *_train_state(6)[:2], {"index": 6}, CFG)
    assert sorted(os.listdir(directory)) == ["2", "2.corrupt", "3"]
    _assert_trees_equal(checkpoints.restore_params(os.path.join(directory, "2")),
                        jax.tree.map(np.asarray, _train_state(5)[0]))

    # A step already set aside once keeps that evidence: the next one goes beside it.
    os.makedirs(os.path.join(directory, "3.corrupt"))
    _garble_params(os.path.join(directory, "3"))
    assert checkpoints.restore_latest(workdir).step == 2
    assert sorted(os.listdir(directory)) == ["2", "2.corrupt", "3.corrupt", "3.corrupt-2"]

    # No step restores: each is named, and none is moved. Every step failing points at the
    # reader (another model config, too little memory) more than at the files.
    _garble_params(os.path.join(directory, "2"))
    with pytest.raises(CheckpointError, match=r"no checkpoint under .*checkpoints can be restored:\n  "
                                              r".*checkpoints/2: JSONDecodeError: "):
        checkpoints.restore_latest(workdir)
    assert sorted(os.listdir(directory)) == ["2", "2.corrupt", "3.corrupt", "3.corrupt-2"]
    assert "there is no older one" in caplog.text

