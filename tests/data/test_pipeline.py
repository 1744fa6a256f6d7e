"""The grain pipeline: checkpoint restore, workers, epochs, sharding, skip accounting."""

from __future__ import annotations

import logging

import pytest

from mmjax.data import jigsaw, pipeline, synthetic
from mmjax.data.skips import DataError, Skipped


class FlakySource:
    """Shape images where record 3 is a bad row, 5 raises and 7 is too small for a 3x3 jigsaw."""

    def __init__(self, n: int = 12):
        self.inner = synthetic.ShapesVqaSource(n, seed=0, size=(96, 96), background="plain")

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        if index == 3:
            return Skipped("bad_row", f"rows.jsonl:{index + 1}", "test")
        if index == 5:
            raise OSError("disk hiccup")
        row = self.inner[index]
        if index == 7:
            row["images"] = [row["images"][0][:40]]
        return row


def _config(**kwargs) -> pipeline.PipelineConfig:
    defaults = dict(seed=1, batch_size=3, process_index=0, process_count=1, read_threads=2)
    return pipeline.PipelineConfig(**{**defaults, **kwargs})


def _summary(batch):
    return [(s["id"], s["epoch"], s["solution"], s["images"][0].tobytes()) for s in batch]


def _dataset(source, **kwargs):
    return pipeline.build_dataset(source, [jigsaw.ImageJigsaw(seed=9)], _config(**kwargs),
                                  batch_fn=list)


def test_restoring_the_state_gives_the_same_next_batches():
    source = synthetic.ShapesVqaSource(12, size=(96, 96), background="plain")
    iterator = iter(_dataset(source))
    for _ in range(5):  # 4 batches per epoch: the state is taken inside epoch 1
        next(iterator)
    state = iterator.get_state()
    expected = [_summary(next(iterator)) for _ in range(4)]
    restored = iter(_dataset(source))  # a fresh pipeline, as after a restart
    restored.set_state(state)
    assert [_summary(next(restored)) for _ in range(4)] == expected
    assert {epoch for batch in expected for _, epoch, _, _ in batch} == {1, 2}


def test_each_epoch_reshuffles_and_draws_new_puzzles():
    source = synthetic.ShapesVqaSource(12, size=(96, 96), background="plain")
    iterator = iter(_dataset(source, batch_size=12))
    first, second = next(iterator), next(iterator)
    assert sorted(s["id"] for s in first) == sorted(s["id"] for s in second)
    assert len({s["id"] for s in first}) == 12  # every record once per epoch
    assert [s["id"] for s in first] != [s["id"] for s in second]
    by_id = {s["id"]: s["solution"] for s in first}
    changed = sum(by_id[s["id"]] != s["solution"] for s in second)
    assert changed == 12  # 9! permutations: a repeat would be a bug, not luck
    assert {s["epoch"] for s in first} == {0} and {s["epoch"] for s in second} == {1}


def test_finite_epochs_and_the_last_partial_batch():
    source = synthetic.ShapesVqaSource(7, size=(96, 96), background="plain")
    kept = list(_dataset(source, num_epochs=1, batch_size=3, drop_remainder=False))
    assert [len(b) for b in kept] == [3, 3, 1]
    assert [len(b) for b in _dataset(source, num_epochs=2, batch_size=3)] == [3, 3, 3, 3]


def test_process_shards_are_disjoint_equal_and_cover_the_data():
    source = synthetic.ShapesVqaSource(11, size=(96, 96), background="plain")
    shards = []
    for index in range(2):
        batch = next(iter(_dataset(source, batch_size=5, process_index=index, process_count=2)))
        shards.append({s["id"] for s in batch})
    assert not shards[0] & shards[1]
    assert len(shards[0] | shards[1]) == 10  # 11 records: 5 per process, one left out


def test_skips_are_counted_logged_restored_and_never_silent(caplog):
    dataset = _dataset(FlakySource(), batch_size=2, num_epochs=1, drop_remainder=False)
    counter = pipeline.skip_counter(dataset)
    with caplog.at_level(logging.WARNING, logger="mmjax.data.skips"):
        iterator = iter(dataset)
        samples = [s for batch in iterator for s in batch]
    assert sorted(s["index"] for s in samples) == [0, 1, 2, 4, 6, 8, 9, 10, 11]
    assert counter.counts == {"bad_row": 1, "read_error": 1, "image_too_small": 1}
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "rows.jsonl:4" in messages and "disk hiccup" in messages
    assert "3 skipped in total" in messages

    # The counts are part of the checkpoint.
    iterator = iter(_dataset(FlakySource(), batch_size=2, num_epochs=1))
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    assert sum(state["skipped"].values()) >= 1
    fresh = _dataset(FlakySource(), batch_size=2, num_epochs=1)
    restored = iter(fresh)
    restored.set_state(state)
    assert pipeline.skip_counter(fresh).counts == state["skipped"]


def test_a_failing_transform_skips_the_sample_unless_strict():
    source = synthetic.ShapesVqaSource(4, size=(96, 96), background="plain")

    def explode_on_two(row):
        if row["index"] == 2:
            raise ZeroDivisionError("bug in a transform")
        return row

    dataset = pipeline.build_dataset(source, [explode_on_two], _config(num_epochs=1, shuffle=False))
    assert [s["index"] for s in dataset] == [0, 1, 3]
    assert pipeline.skip_counter(dataset).counts == {"transform_error": 1}
    strict = pipeline.build_dataset(source, [explode_on_two],
                                    _config(num_epochs=1, shuffle=False, strict=True))
    with pytest.raises(DataError, match="transform_error at .*ZeroDivisionError"):
        list(strict)
    strict_source = pipeline.build_dataset(FlakySource(), [], _config(num_epochs=1, shuffle=False,
                                                                      strict=True))
    with pytest.raises(DataError, match="read_error"):
        list(strict_source)


@pytest.mark.slow  # worker processes
def test_worker_processes_give_the_same_batches_and_restore():
    source = synthetic.ShapesVqaSource(12, size=(96, 96), background="plain")
    in_process = iter(_dataset(source))
    expected = [_summary(next(in_process)) for _ in range(6)]
    with_workers = iter(_dataset(source, worker_count=2))
    got = [_summary(next(with_workers)) for _ in range(2)]
    state = with_workers.get_state()
    got += [_summary(next(with_workers)) for _ in range(4)]
    with_workers.close()
    assert got == expected
    restored = iter(_dataset(source, worker_count=2))
    restored.set_state(state)
    assert [_summary(next(restored)) for _ in range(2)] == expected[2:4]
    restored.close()
