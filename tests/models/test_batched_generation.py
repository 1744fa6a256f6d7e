"""Fixed-size batches and the one-ahead host build (mmjax.models.batched_generation); no model."""

import threading

import pytest

from mmjax.models.batched_generation import chunks, generate_batches, pad_rows


def test_chunks_cut_in_order_with_a_short_last_chunk():
    assert chunks(range(7), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks("abcd", 2) == [["a", "b"], ["c", "d"]]
    assert chunks([5], 4) == [[5]]
    assert chunks([], 3) == []
    with pytest.raises(ValueError):
        chunks([1, 2], 0)


def test_pad_rows_repeats_the_last_row():
    assert pad_rows(["a", "b"], 5) == ["a", "b", "b", "b", "b"]
    assert pad_rows((1, 2, 3), 3) == [1, 2, 3]
    row = {"x": 1}
    padded = pad_rows([{"x": 0}, row], 4)
    assert padded[2] is row and padded[3] is row  # copies are the same row, not new ones
    with pytest.raises(ValueError):
        pad_rows([], 2)
    with pytest.raises(ValueError):
        pad_rows([1, 2, 3], 2)


def _record(items, size):
    """generate_batches over chunks(items, size), each padded to size: the log of calls, the
    results, and the batch size each generate call got."""
    log, sizes, main = [], [], threading.current_thread()
    parts = chunks(items, size)
    built = [threading.Event() for _ in parts]

    def build(chunk):
        assert threading.current_thread() is not main  # on the host thread
        log.append(("build", chunk[0]))
        built[parts.index(chunk)].set()
        return pad_rows([10 * x for x in chunk], size)

    def generate(index, chunk, batch):
        log.append(("generate start", index))
        sizes.append(len(batch))
        if index + 1 < len(parts):
            # Blocks until chunk index + 1 is built: a build that only started after this call
            # returned would never come (the wait is a guard against hanging, not a timing).
            assert built[index + 1].wait(30), "the next chunk was not built while this one generated"
        log.append(("generate end", index))
        return [b + 1 for b in batch]

    results = list(generate_batches(parts, build, generate))
    return log, results, sizes


def test_generate_batches_in_order_with_one_batch_size():
    log, results, sizes = _record([1, 2, 3, 4, 5], 2)
    assert results == [(0, [1, 2], [11, 21]), (1, [3, 4], [31, 41]), (2, [5], [51, 51])]
    assert sizes == [2, 2, 2]  # the short last chunk is padded: one shape for every call


def test_build_runs_one_chunk_ahead_of_generate():
    log, _, _ = _record([1, 2, 3, 4, 5, 6, 7], 2)
    at = {entry: n for n, entry in enumerate(log)}
    firsts = [1, 3, 5, 7]
    for i, first in enumerate(firsts):
        assert at[("build", first)] < at[("generate start", i)]  # built before it is generated
        if i + 1 < len(firsts):  # the next chunk is built before this generate returns ...
            assert at[("build", firsts[i + 1])] < at[("generate end", i)]
        if i >= 2:  # ... but not before the one two back has returned: one ahead, not two
            assert at[("build", first)] > at[("generate end", i - 2)]
    assert len(log) == 3 * len(firsts)  # each chunk built once, generated once


def test_no_chunks_calls_nothing():
    calls = []
    assert list(generate_batches([], calls.append, lambda *a: calls.append(a))) == []
    assert calls == []


def test_chunks_are_pulled_lazily_one_ahead():
    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield [i]

    batches = generate_batches(source(), lambda chunk: chunk, lambda index, chunk, batch: batch)
    assert next(batches) == (0, [0], [0])
    batches.close()  # waits for the build in flight
    assert pulled == [0, 1]  # the chunk generated and the one built ahead, no more


def _fail_build_at(value):
    def build(chunk):
        if chunk[0] == value:
            raise KeyError(f"build {value}")
        return chunk
    return build


def test_build_errors_propagate_after_earlier_results():
    got = []
    with pytest.raises(KeyError, match="build 5"):
        for index, chunk, out in generate_batches(chunks(range(1, 8), 2), _fail_build_at(5), lambda i, c, b: b):
            got.append(out)
    assert got == [[1, 2], [3, 4]]  # the batches before the bad one were answered


def test_generate_errors_propagate_and_stop_the_run():
    got, calls = [], []

    def generate(index, chunk, batch):
        calls.append(index)
        if index == 1:
            raise RuntimeError("generate 1")
        return batch

    with pytest.raises(RuntimeError, match="generate 1"):
        for index, chunk, out in generate_batches([[1], [2], [3], [4]], lambda c: c, generate):
            got.append(out)
    assert got == [[1]] and calls == [0, 1]  # nothing generated after the failure


def test_generate_error_waits_for_the_pending_build():
    log, calls, release = [], [], threading.Event()

    def build(chunk):
        if chunk[0] == 2:
            assert release.wait(30)  # still building when generate(0) raises
        log.append(chunk[0])
        return chunk

    def generate(index, chunk, batch):
        calls.append(index)
        release.set()
        raise RuntimeError("device")

    with pytest.raises(RuntimeError, match="device"):
        list(generate_batches([[1], [2], [3]], build, generate))
    assert calls == [0]
    assert log == [1, 2]  # the build of chunk 2 finished (the thread pool is shut down), chunk 3 never built
