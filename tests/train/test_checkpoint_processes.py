"""Training checkpoints of several processes: each process's data state, counters, and a
clear refusal to resume with another process count (the 2-process run: tests/rl/test_multiprocess.py)."""

import json
import os

import numpy as np
import optax
import pytest

from mmjax.models.qwen2_5_vl import CheckpointError, preset
from mmjax.train import checkpoints

CFG = preset("tiny")


def _save(workdir, counters=None):
    params = {"language_model": {"norm": {"scale": np.ones(8, np.float32)}}}
    with checkpoints.TrainCheckpointer(workdir, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, params, optax.sgd(0.1).init(params), {"next_index": 4}, CFG, counters=counters)
    return os.path.join(checkpoints.checkpoint_dir(workdir), "1")


def test_counters_come_back_and_old_checkpoints_have_none(tmp_path):
    _save(str(tmp_path / "a"), counters={"num_tokens": 1234})
    assert checkpoints.restore_latest(str(tmp_path / "a")).counters == {"num_tokens": 1234}
    _save(str(tmp_path / "b"))
    assert checkpoints.restore_latest(str(tmp_path / "b")).counters == {}


def test_a_run_with_another_process_count_is_refused(tmp_path):
    step = _save(str(tmp_path))
    # What two processes write: every process's own iterator state, in process order.
    with open(os.path.join(step, checkpoints.DATA_STATE, "metadata"), "w") as f:
        json.dump({checkpoints.PER_PROCESS: [{"next_index": 4}, {"next_index": 4}]}, f)
    with pytest.raises(CheckpointError, match=r"written by 2 process\(es\), but this run has 1"):
        checkpoints.restore_latest(str(tmp_path))
