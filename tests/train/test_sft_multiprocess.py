"""SFT in the one Trainer loop on two processes x 4 CPU devices (fsdp over both), joined by
jax.distributed through a local coordinator: the numbers of one process on 8 devices, and
each process's share of params and data state is saved. The launcher is
tests/rl/test_multiprocess.py's."""

import json
import os

import numpy as np
import pytest

from mmjax.train import checkpoints
from test_multiprocess import STEPS, Run, _export, _metrics, _params


SFT = ("--config.mode=sft", "--config.sft.num_epochs=100")  # the demo's colour rows, cut at max_steps


@pytest.mark.slow  # about a minute on 2 cores: 3 processes
def test_sft_on_two_processes_equals_one_process_on_8_devices(tmp_path):
    """The same Trainer loop for SFT: 2 processes x 4 devices (fsdp over both) give the numbers
    of 1 process x 8 devices, and each process's share of params and data state is saved."""
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    runs = []
    try:
        single = Run("single", single_dir, 1, extra=SFT)
        runs.append(single)
        multi = Run("multi", multi_dir, 2, extra=SFT)
        runs.append(multi)
        multi.wait()
        single.wait()
    finally:
        for run in runs:
            run.kill()
    got, want = _metrics(multi_dir), _metrics(single_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for key in ("tokens/prompt", "tokens/answer", "data/epoch"):  # the same global batches
        assert [r[key] for r in got] == [r[key] for r in want], key
    for key in ("loss", "grad_norm", "entropy"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-6, err_msg=key)
    start = _params(single_dir, 1)
    for g, w, s in zip(_params(multi_dir, STEPS), _params(single_dir, STEPS), start):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6 * max(1.0, float(np.abs(w).max())))
    assert max(float(np.abs(w - s).max()) for w, s in zip(_params(single_dir, STEPS), start)) > 1e-4
    step_dir = os.path.join(checkpoints.checkpoint_dir(str(multi_dir)), str(STEPS))
    with open(os.path.join(step_dir, checkpoints.DATA_STATE, "metadata")) as f:
        assert len(json.load(f)[checkpoints.PER_PROCESS]) == 2
    assert _export(multi_dir)  # process 0 wrote the HF export of the gathered params
