"""mmjax.train.metrics: JSONL rows, resume truncation, TensorBoard events, NaN handling, process 0 only."""

import glob
import io
import json
import logging
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from mmjax.train import metrics


def read_events(workdir) -> list:
    """Every Event in WORKDIR/tb, in file order (TFRecord framing: len u64, crc u32, data, crc u32)."""
    events = []
    for path in sorted(glob.glob(os.path.join(workdir, metrics.TB_DIR, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            events.append(event)
            pos += 12 + length + 4
    return events


def scalars(workdir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows it: a SessionLog START at step S purges >= S."""
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(workdir):
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            out = {tag: [(s, v) for s, v in rows if s < event.step] for tag, rows in out.items()}
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_jsonl_round_trip_of_python_numpy_and_jax_values(tmp_path):
    with metrics.MetricsWriter(str(tmp_path)) as log:
        log.write(1, {"reward": 0.5, "num_tokens": np.int64(12), "kl": jnp.float32(0.25), "frac": np.float32(0.125)})
        log.write(2, {"reward": jnp.array(1.0), "flag": True})
    rows = metrics.read_metrics(str(tmp_path))
    assert rows == [{"step": 1, "reward": 0.5, "num_tokens": 12, "kl": 0.25, "frac": 0.125},
                    {"step": 2, "reward": 1.0, "flag": 1}]
    assert isinstance(rows[0]["num_tokens"], int)


def test_each_write_is_flushed_before_close(tmp_path):
    log = metrics.MetricsWriter(str(tmp_path), tensorboard=False)
    log.write(7, {"reward": 0.1})
    with open(tmp_path / metrics.METRICS_FILE) as f:  # read while the writer is still open
        assert json.loads(f.read()) == {"step": 7, "reward": 0.1}
    log.close()


def test_resume_drops_rows_after_the_restored_step(tmp_path):
    with metrics.MetricsWriter(str(tmp_path)) as log:
        for step in range(1, 11):
            log.write(step, {"reward": step / 10})
    # the run died after step 10 but its last checkpoint is step 6: steps 7.. are redone
    with metrics.MetricsWriter(str(tmp_path), resume_step=6) as log:
        assert log.last_step == 6
        for step in range(7, 9):
            log.write(step, {"reward": 1.0 + step})
    rows = metrics.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rows[6]["reward"] == 8.0 and rows[5]["reward"] == 0.6
    tb = scalars(str(tmp_path))["reward"]
    assert [s for s, _ in tb] == [1, 2, 3, 4, 5, 6, 7, 8]  # TensorBoard purged the old 7..10
    assert tb[6][1] == pytest.approx(8.0)


def test_fresh_run_in_an_old_workdir_starts_the_file_over(tmp_path):
    with metrics.MetricsWriter(str(tmp_path)) as log:
        log.write(1, {"reward": 0.0})
        log.write(2, {"reward": 0.0})
    with metrics.MetricsWriter(str(tmp_path)) as log:
        log.write(1, {"reward": 1.0})
    assert metrics.read_metrics(str(tmp_path)) == [{"step": 1, "reward": 1.0}]
    assert scalars(str(tmp_path))["reward"] == [(1, 1.0)]


def test_repeated_step_is_refused(tmp_path):
    with metrics.MetricsWriter(str(tmp_path), tensorboard=False) as log:
        log.write(3, {"reward": 0.0})
        with pytest.raises(ValueError, match=r"metrics.jsonl: step 3 written after step 3"):
            log.write(3, {"kl": 0.0})
    with metrics.MetricsWriter(str(tmp_path), tensorboard=False, resume_step=3) as log:
        with pytest.raises(ValueError, match="step 2 written after step 3"):
            log.write(2, {"reward": 0.0})


def test_partial_last_line_from_a_crash_is_dropped_on_resume(tmp_path):
    path = tmp_path / metrics.METRICS_FILE
    path.write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "rew')
    with metrics.MetricsWriter(str(tmp_path), resume_step=5, tensorboard=False) as log:
        assert log.last_step == 1
        log.write(2, {"reward": 0.75})
    assert metrics.read_metrics(str(tmp_path)) == [{"step": 1, "reward": 0.5}, {"step": 2, "reward": 0.75}]


def test_corrupt_middle_line_is_named(tmp_path):
    (tmp_path / metrics.METRICS_FILE).write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON object"):
        metrics.MetricsWriter(str(tmp_path), resume_step=3, tensorboard=False)


def test_tensorboard_holds_the_scalars(tmp_path):
    with metrics.MetricsWriter(str(tmp_path)) as log:
        log.write(1, {"reward": 0.25, "rewards/jigsaw/mean": 0.5})
        log.write(2, {"reward": 0.75, "kl": 0.125})
    got = scalars(str(tmp_path))
    assert got["reward"] == [(1, 0.25), (2, 0.75)]
    assert got["rewards/jigsaw/mean"] == [(1, 0.5)] and got["kl"] == [(2, 0.125)]


def test_non_finite_values_are_null_in_json_skipped_in_tb_and_warned_once(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mmjax.train.metrics"):
        with metrics.MetricsWriter(str(tmp_path)) as log:
            log.write(1, {"loss": float("nan"), "reward": 1.0})
            log.write(2, {"loss": np.float32(np.inf), "reward": 2.0})
            log.write(3, {"loss": jnp.float32(0.5), "kl": -np.inf})
    text = (tmp_path / metrics.METRICS_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = metrics.read_metrics(str(tmp_path))
    assert [r["loss"] for r in rows] == [None, None, 0.5] and rows[2]["kl"] is None
    got = scalars(str(tmp_path))
    assert got["loss"] == [(3, 0.5)] and "kl" not in got and len(got["reward"]) == 2
    warned = [r.getMessage() for r in caplog.records if "not sent to TensorBoard" in r.getMessage()]
    assert len(warned) == 2 and "'loss'" in warned[0] and "'kl'" in warned[1]


def test_bad_values_are_named(tmp_path):
    with metrics.MetricsWriter(str(tmp_path), tensorboard=False) as log:
        with pytest.raises(TypeError, match="metric 'lengths': expected a scalar"):
            log.write(1, {"lengths": np.array([1, 2])})
        with pytest.raises(TypeError, match="metric 'name': expected a scalar number"):
            log.write(1, {"name": "x"})
        with pytest.raises(ValueError, match="'step' is a reserved"):
            log.write(1, {"step": 1})


def test_only_process_zero_writes(tmp_path):
    with metrics.MetricsWriter(str(tmp_path / "w"), process_index=1) as log:
        log.write(1, {"reward": 1.0})
    assert not os.path.exists(tmp_path / "w")
    assert metrics.progress(10, process_index=1).disable


def test_progress_bar_shows_reward_and_step_time():
    out = io.StringIO()
    bar = metrics.progress(10, initial=4, file=out)
    assert bar.n == 4
    bar.set_postfix(metrics.progress_postfix({"reward": 0.4567, "step_time": 1.5, "kl": 0.1}))
    bar.update()
    bar.close()
    text = out.getvalue()
    assert "5/10" in text and "reward=0.457" in text and "step_time=1.50s" in text and "kl" not in text


_WITHOUT_TORCH = """
import json, sys, tempfile
from mmjax.train import metrics
workdir = tempfile.mkdtemp()
writer = metrics.MetricsWriter(workdir)
writer.write(1, {"reward": 0.5})
print(json.dumps({"workdir": workdir, "torch": "torch" in sys.modules}))
import torch  # still importable afterwards
"""


def test_tensorboard_events_are_written_without_importing_torch():
    # tensorboardX imports torch when it is installed (it is here: the parity oracle), which
    # cost every job 2.8 s at start; mmjax logs floats and needs none of it.
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False
    scalars = [(e.step, v.tag, v.simple_value) for e in read_events(out["workdir"]) for v in e.summary.value]
    assert scalars == [(1, "reward", 0.5)]
