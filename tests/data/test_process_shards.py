"""Process shards of the data: side by side, the processes' batches are one process's batches."""

import pytest

from mmjax.data import pipeline


def _keys(n, batch_size, epochs, index, count):
    config = pipeline.PipelineConfig(seed=1, batch_size=batch_size, num_epochs=epochs, process_index=index,
                                     process_count=count)
    keys = pipeline.record_keys(n, config)
    return [keys[i] for i in range(min(len(keys), 60))]


@pytest.mark.parametrize("n, batch, epochs", [(12, 3, 1), (10, 3, 2), (50, 2, None)])
def test_two_processes_side_by_side_read_what_one_process_reads(n, batch, epochs):
    one = _keys(n, 2 * batch, epochs, 0, 1)
    shards = [_keys(n, batch, epochs, i, 2) for i in range(2)]
    assert len(shards[0]) == len(shards[1])  # as many batches each: no process waits on another
    side_by_side = [key for k in range(0, len(shards[0]), batch) for shard in shards for key in shard[k:k + batch]]
    m = min(len(one), len(side_by_side))
    assert m >= min(n, 40) and side_by_side[:m] == one[:m]
    if epochs == 1:
        assert not set(shards[0]) & set(shards[1])  # disjoint
        assert sorted(side_by_side) == sorted(one)  # and together all of it
