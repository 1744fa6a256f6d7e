"""Two processes x 2 CPU devices (jax.distributed, local coordinator), params sharded across
both: a corrupt newest step is skipped by both processes and moved aside once, the step is
saved again, and the HF export of the sharded model is written whole by process 0."""

import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE_S = 300

_WORKER = r"""
import os, sys
import jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np, optax
from jax.experimental import multihost_utils
from mmjax import sharding
from mmjax.models import qwen2_5_vl
from mmjax.train import checkpoints

workdir, me = sys.argv[3], jax.process_index()
steps = checkpoints.checkpoint_dir(workdir)
mesh = sharding.make_mesh(data=1, fsdp=4)
model = qwen2_5_vl.Qwen2_5_VL.from_config(qwen2_5_vl.preset("tiny"), seed=0).shard(mesh)
assert any(not a.is_fully_addressable for a in jax.tree.leaves(model.params))  # shards on both processes
doubled = jax.tree.map(lambda a: a * 2, model.params)
with checkpoints.TrainCheckpointer(workdir, save_every=1, async_save=False) as ckpt:
    for step, params in ((1, model.params), (2, doubled)):
        ckpt.save(step, params, optax.sgd(0.1).init(params), {"i": step}, model.config)
if me == 0:  # tests/rl/test_learner.py's damage: garbage over the params' array files
    for root, _, names in os.walk(os.path.join(steps, "2", "params")):
        for name in names:
            if not name.endswith(".txt") and "metadata" not in name:
                open(os.path.join(root, name), "wb").write(b"garbage")
multihost_utils.sync_global_devices("damaged")

state = checkpoints.restore_latest(workdir, params_target=model.params)
assert state.step == 1, state.step
# Back from restore_latest, every process already sees the step moved (a manager opened now
# lists the same steps on both).
assert sorted(os.listdir(steps)) == ["1", "2.corrupt"], os.listdir(steps)
with checkpoints.TrainCheckpointer(workdir, save_every=1, async_save=False) as ckpt:
    assert ckpt.save(2, doubled, optax.sgd(0.1).init(doubled), {"i": 2}, model.config)
assert sorted(os.listdir(steps)) == ["1", "2", "2.corrupt"], os.listdir(steps)

out = checkpoints.export_hf(workdir, model.replace(params=doubled))
assert os.path.isfile(os.path.join(out, "model.safetensors"))  # on every process once it returns
exported = qwen2_5_vl.load_hf(out, progress=False).params
expected = multihost_utils.process_allgather(doubled, tiled=True)
for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(exported), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
print(f"PROCESS_{me}_OK", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes
def test_two_processes_fall_back_together_move_the_step_once_and_export_the_sharded_model(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    logs = [tmp_path / f"process.{i}.log" for i in range(2)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, address, str(i), str(tmp_path / "run")],
                                          cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + DEADLINE_S
    try:
        # One process failing leaves the other waiting in a collective: stop at the first failure.
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    outputs = [log.read_text(errors="replace") for log in logs]
    detail = "\n".join(f"--- process {i} (exit {p.returncode})\n{out[-3000:]}"
                       for i, (p, out) in enumerate(zip(procs, outputs)))
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"PROCESS_{i}_OK" in out, detail
