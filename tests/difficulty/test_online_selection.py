"""Online selection as the pipeline's feedback stage: retired rows are passed over as batches draw
them, the metrics count it, and the iterator's state resumes the records and the online state
together. numpy and grain only: no model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mmjax.data import pipeline
from mmjax.difficulty import online_state
from mmjax.difficulty.online_selection import OnlineSelection
from mmjax.difficulty.online_state import OnlineConfig

G = 2
ROWS = 12


class Rows:
    """A random-access source of ROWS plain rows."""

    def __len__(self):
        return ROWS

    def __getitem__(self, index):
        return {"id": f"row{index}"}

    def __repr__(self):
        return f"Rows({ROWS})"


def _dataset(selection):
    config = pipeline.PipelineConfig(seed=3, batch_size=1, read_threads=1, shard_by_process=False)
    return pipeline.build_dataset(Rows(), [], config, feedback=selection)


def _observe(selection, rows: list[int], solved: dict[int, int], step: int):
    """Each row's G rewards: `solved[row]` of them 1, the rest 0 (default: none solved)."""
    rewards = np.concatenate([[1.0] * solved.get(r, 0) + [0.0] * (G - solved.get(r, 0)) for r in rows])
    selection.observe({"index": np.asarray(rows), "epoch": np.zeros(len(rows), int), "rewards": rewards},
                      num_generations=G, step=step)


def test_band_passes_over_retired_rows_and_counts_it():
    selection = OnlineSelection(OnlineConfig(policy="band", retry_probability=0.0, ema_decay=0.5), ROWS, seed=0)
    it = iter(_dataset(selection))
    first = [next(it)["index"] for _ in range(ROWS)]  # the first epoch: every row once
    assert sorted(first) == list(range(ROWS))
    retire = first[:4]
    _observe(selection, first, {r: 1 for r in first[4:]}, step=0)  # 0 of 2 on four rows: below 0.25
    metrics = selection.metrics()
    assert metrics["online/retired"] == 4 and metrics["online/retired_total"] == 4
    assert metrics["online/drawn"] == ROWS and metrics["online/passed_over"] == 0
    assert metrics["online/mean_pass_rate_drawn"] == 0.5  # all unseen when drawn: the prior mean
    assert metrics["online/levels/unsolved"] == 4 and metrics["online/levels/medium"] == ROWS - 4
    second = [next(it)["index"] for _ in range(2 * (ROWS - 4))]  # two more epochs
    assert not set(second) & set(retire) and sorted(second) == sorted(2 * first[4:])
    metrics = selection.metrics()
    assert metrics["online/passed_over"] == 8 and metrics["online/drawn"] == 16  # 4 retired rows x 2 epochs
    assert metrics["online/retried"] == 0 and metrics["online/mean_pass_rate_drawn"] == 0.5


def test_the_iterator_state_resumes_records_and_online_state_together():
    config = OnlineConfig(policy="weighted", estimator="beta", min_weight=0.05)
    unbroken = OnlineSelection(config, ROWS, seed=1)
    it = iter(_dataset(unbroken))
    drawn = []
    for step in range(6):
        rows = [next(it)["index"] for _ in range(4)]
        _observe(unbroken, rows, {r: r % 3 for r in rows}, step)
        unbroken.metrics()
        drawn.append(rows)
        if step == 2:
            saved = json.loads(json.dumps(it.get_state()))  # as a checkpoint stores it
    resumed = OnlineSelection(config, ROWS, seed=1)
    it = iter(_dataset(resumed))
    it.set_state(saved)
    assert online_state.to_dict(resumed.state) != online_state.to_dict(OnlineSelection(config, ROWS, 1).state)
    for step in range(3, 6):
        rows = [next(it)["index"] for _ in range(4)]
        assert rows == drawn[step], step
        _observe(resumed, rows, {r: r % 3 for r in rows}, step)
        resumed.metrics()
    assert online_state.to_dict(resumed.state) == online_state.to_dict(unbroken.state)


def test_a_checkpoint_from_before_the_stage_resumes_the_records():
    # A data state written without the feedback stage resumes the records; the online state starts afresh.
    config = pipeline.PipelineConfig(seed=3, batch_size=1, read_threads=1, shard_by_process=False)
    plain = iter(pipeline.build_dataset(Rows(), [], config))
    for _ in range(5):
        next(plain)
    old = plain.get_state()
    want = [next(plain)["index"] for _ in range(3)]
    it = iter(_dataset(OnlineSelection(OnlineConfig(), ROWS, seed=0)))
    it.set_state(old)
    assert [next(it)["index"] for _ in range(3)] == want


def test_solved_reward_names_the_function_that_judges_and_is_checked():
    selection = OnlineSelection(OnlineConfig(solved_reward="accuracy"), 3, seed=0)
    rows = {"index": np.asarray([0, 1]), "epoch": np.zeros(2, int), "rewards": np.asarray([1.1, 1.1, 0.1, 0.1]),
            "fn/accuracy": np.asarray([1.0, 1.0, 0.0, 0.0]), "fn/format": np.asarray([0.1] * 4)}
    selection.observe(rows, num_generations=G, step=0)
    assert selection.state.pass_rate[:2].tolist() == [1.0, 0.0] and math.isnan(selection.state.pass_rate[2])
    with pytest.raises(KeyError, match=r"solved_reward='jigsaw_exact'.*\['accuracy', 'format'\]"):
        OnlineSelection(OnlineConfig(solved_reward="jigsaw_exact"), 3, seed=0).observe(rows, G, 0)
    with pytest.raises(ValueError, match="checkpoint's online state has 3 rows; this run's data has 4"):
        OnlineSelection(OnlineConfig(), 4, seed=0).set_state(selection.get_state())


def test_a_band_with_every_row_retired_and_no_retries_is_an_error_not_a_hang():
    selection = OnlineSelection(OnlineConfig(policy="band", retry_probability=0.0), ROWS, seed=0)
    it = iter(_dataset(selection))
    rows = [next(it)["index"] for _ in range(ROWS)]
    _observe(selection, rows, {}, step=0)  # nothing solved: every row below the band
    with pytest.raises(RuntimeError, match="every one of the 12 rows is retired"):
        next(it)


def test_report_plots_are_written_from_the_metrics_that_exist(tmp_path):
    from mmjax.difficulty import online_plots
    rows = [{"step": s, "online/levels/unseen": 10.0 - s, "online/levels/hard": float(s), "online/retired": 1.0,
             "online/mean_pass_rate_drawn": float("nan") if s == 1 else 0.4, "frac_reward_zero_std": 0.5,
             "jigsaw/jigsaw_image/difficulty": 9.0 if s < 3 else 6.0, "jigsaw/jigsaw_image/solve_rate": None}
            for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = online_plots.write(str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["online.png", "jigsaw.png"]
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert online_plots._series(rows, "online/mean_pass_rate_drawn") == ([2, 3], [0.4, 0.4])  # NaN left out
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    assert online_plots.write(str(tmp_path)) == []  # a run without them: no empty plots
