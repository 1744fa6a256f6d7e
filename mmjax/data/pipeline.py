"""The grain input pipeline: keys -> rows -> task transforms -> (workers) -> batches.

  record keys    this process's slots of one global stream of the source's records,
                 shuffled per epoch, repeated; each key is (epoch, record index); the
                 processes' batches side by side are one process's bigger batches
  rows           source[index] with "epoch" and "index" attached
  transforms     grain Maps (task transforms draw from record_rng(seed, epoch, index),
                 so a record's puzzle depends on neither order nor worker count)
  workers        optional grain worker processes (mp_prefetch)
  drop skipped   main process: `Skipped` markers are counted, logged and dropped
  feedback       optional main-process stage whose state training updates
                 (mmjax.data.feedback: online difficulty, adaptive jigsaw)
  batch          optional batch_fn over lists of samples

The iterator is a grain DatasetIterator: `get_state()` / `set_state()` resume
exactly, including the skip counts. Batches are built after the skip filter, in
the main process, so a skipped sample never leaves a hole in a batch.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any, Callable, Sequence

from absl import flags
import grain

from mmjax.data.feedback import Feedback, FeedbackStage
from mmjax.data.skips import DataError, SkipCounter, Skipped, skip_or_raise


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Input pipeline settings.

    Attributes:
      seed: drives the shuffle and every task transform's randomness.
      shuffle: shuffle records (differently each epoch).
      num_epochs: passes over the data; None repeats forever.
      batch_size: samples per batch on this process (when a batch_fn is given).
      drop_remainder: drop a last partial batch.
      worker_count: grain worker processes; 0 reads in the main process.
      worker_buffer_size: elements each worker prefetches.
      read_threads: threads reading and transforming records per process.
      shard_by_process: give each JAX process a disjoint, equal-size shard.
      process_index / process_count: override jax.process_index()/process_count().
      strict: raise on the first bad sample instead of skipping it.
    """

    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    batch_size: int = 8
    drop_remainder: bool = True
    worker_count: int = 0
    worker_buffer_size: int = 2
    read_threads: int = 4
    shard_by_process: bool = True
    process_index: int | None = None
    process_count: int | None = None
    strict: bool = False


def process_shard(config: PipelineConfig) -> tuple[int, int]:
    """(index, count) of this process's shard."""
    if not config.shard_by_process:
        return 0, 1
    if config.process_index is not None and config.process_count is not None:
        return config.process_index, config.process_count
    import jax  # pylint: disable=g-import-not-at-top

    return jax.process_index(), jax.process_count()


@dataclasses.dataclass(frozen=True)
class LoadRow(grain.transforms.Map):
    """(epoch, index) -> source[index] with the key attached; errors become skips."""

    source: Any
    strict: bool = False

    def map(self, element: tuple[int, int]) -> Any:
        epoch, index = element
        try:
            row = self.source[index]
        except DataError:
            raise  # A strict source's own error already names the file and row.
        except Exception as e:  # pylint: disable=broad-except
            # Sources report known problems themselves; this is the net under the rest.
            return skip_or_raise(self.strict, "read_error", f"{self.source!r}[{index}]",
                                 _describe(e), cause=e)
        if isinstance(row, Skipped):
            return row
        return {**row, "epoch": int(epoch), "index": int(index)}


@dataclasses.dataclass(frozen=True)
class GuardedMap(grain.transforms.Map):
    """Runs `transform` on non-skipped records; an exception skips the record."""

    transform: grain.transforms.Map | Callable[[Any], Any]
    strict: bool = False

    def map(self, element: Any) -> Any:
        if isinstance(element, Skipped):
            return element
        fn = self.transform.map if isinstance(self.transform, grain.transforms.Map) else self.transform
        try:
            return fn(element)
        except Exception as e:  # pylint: disable=broad-except
            where = element.get("where", "?") if isinstance(element, dict) else "?"
            if isinstance(e, DataError) and where in str(e):
                raise  # A strict transform's own error, already naming the record.
            name = getattr(self.transform, "__name__", type(self.transform).__name__)
            # Strict mode still needs the record's file and line to find the bad data.
            return skip_or_raise(self.strict, "transform_error", where,
                                 f"{name}: {_describe(e)}", cause=e)


def _describe(error: Exception) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    at = f" ({frame.filename}:{frame.lineno})" if frame else ""
    return f"{type(error).__name__}: {error}{at}"


class _DropSkippedIterator(grain.DatasetIterator):
    """Counts and drops `Skipped` records; the counts are part of the iterator state."""

    def __init__(self, parent: grain.DatasetIterator, counter: SkipCounter):
        super().__init__(parent)
        self._counter = counter

    def __next__(self) -> Any:
        while True:
            element = next(self._parent)
            if not isinstance(element, Skipped):
                return element
            self._counter.record(element)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "skipped": self._counter.counts}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._counter.set_counts(state["skipped"])


class DropSkipped(grain.IterDataset):
    """IterDataset stage that counts (into `counter`), logs and drops skipped records."""

    def __init__(self, parent: grain.IterDataset, counter: SkipCounter):
        super().__init__(parent)
        self.counter = counter

    def __iter__(self) -> grain.DatasetIterator:
        return _DropSkippedIterator(self._parent.__iter__(), self.counter)

    def __str__(self) -> str:
        return "DropSkipped"


def ensure_absl_flags_parsed() -> None:
    """Marks absl flags parsed when no absl app did it (pytest, notebooks, workers).

    Grain reads its settings from absl flags; reading an unparsed flag raises, and
    worker processes start with fresh, unparsed flags.
    """
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _init_worker(worker_index: int, worker_count: int) -> None:
    del worker_index, worker_count
    ensure_absl_flags_parsed()


def record_keys(num_records: int, config: PipelineConfig) -> grain.MapDataset:
    """(epoch, record index) pairs for this process: its slots of one global stream.

    The global stream is the same on every process: the records (cut to a multiple of the
    process count, so shards are equal), shuffled per epoch, repeated. It is dealt out a
    batch at a time: global batch k is positions [k B P, (k + 1) B P) of the stream (B =
    batch_size, P processes), and process p reads the B positions from k B P + p B. So the
    processes' batches laid side by side in process order are exactly the batches one
    process with batch_size B P reads (the data order does not depend on how many processes
    share it), and the shards are disjoint. One process reads the stream as it is.
    """
    shard, num_shards = process_shard(config)
    per_shard = num_records // num_shards
    if per_shard == 0:
        raise ValueError(f"{num_records} records cannot fill {num_shards} process shards")
    total = per_shard * num_shards
    keys = grain.MapDataset.range(total)
    if config.shuffle:
        keys = keys.shuffle(seed=config.seed)
    if config.num_epochs != 1:
        keys = keys.repeat(config.num_epochs)
    keys = keys.map_with_index(_EpochKey(total))
    if num_shards == 1:
        return keys
    return _ProcessSlots(keys, config.batch_size, shard, num_shards)


@dataclasses.dataclass(frozen=True)
class _EpochKey(grain.transforms.MapWithIndex):
    """Position in the repeated key sequence -> (epoch, record index)."""

    per_epoch: int

    def map_with_index(self, index: int, element: int) -> tuple[int, int]:
        return index // self.per_epoch, int(element)


class _ProcessSlots(grain.MapDataset):
    """Process `shard`'s positions of the global stream `parent` (see `record_keys`).

    Local position j is global position (j // B) B P + shard B + j % B. A last global batch
    shorter than B P is split evenly, so every process has as many elements (hence batches)
    as the others and none waits on a collective the others never reach.
    """

    def __init__(self, parent: grain.MapDataset, block: int, shard: int, num_shards: int):
        super().__init__(parent)
        self._block, self._shard, self._num_shards = block, shard, num_shards
        full, rest = divmod(len(parent), block * num_shards)
        self._full = full * block          # local positions inside whole global batches
        self._rest = rest // num_shards    # local positions in the last, partial one
        self._length = self._full + self._rest

    def __len__(self) -> int:
        return self._length

    def _global(self, index: int) -> int:
        epoch, index = divmod(index, self._length)  # grain reads past the end as further epochs
        if index < self._full:
            k, j = divmod(index, self._block)
            position = (k * self._num_shards + self._shard) * self._block + j
        else:
            position = self._full * self._num_shards + self._shard * self._rest + index - self._full
        return epoch * len(self._parent) + position

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._global(index)]

    def _getitems(self, indices):
        return self._parent._getitems([self._global(i) for i in indices])  # pylint: disable=protected-access

    def __str__(self) -> str:
        return f"ProcessSlots(block={self._block}, shard={self._shard} of {self._num_shards})"


def _checked_length(source: Any, config: PipelineConfig) -> int:
    """len(source), or a ValueError naming the source when it cannot fill the shards."""
    num_records = len(source)
    _, num_shards = process_shard(config)
    if num_records < num_shards:
        empty = " (empty: no rows, or only blank lines)" if num_records == 0 else ""
        raise ValueError(f"{source!r}{empty}: {num_records} records cannot fill {num_shards}"
                         " process shards")
    return num_records


def build_dataset(source: Any, transforms: Sequence[grain.transforms.Map | Callable[[Any], Any]],
                  config: PipelineConfig, batch_fn: Callable[[list[Any]], Any] | None = None,
                  counter: SkipCounter | None = None, feedback: Feedback | None = None) -> grain.IterDataset:
    """The full pipeline over a random-access `source`.

    Args:
      source: has `__len__` and `__getitem__` returning a row dict or `Skipped`.
      transforms: applied in order to each row (grain Maps or plain callables).
      config: see `PipelineConfig`.
      batch_fn: turns a list of `config.batch_size` samples into a batch; None
        yields single samples.
      counter: receives the skip counts (a new one if None; `skip_counter(ds)`
        finds it on the returned dataset).
      feedback: a main-process stage after the skip filter whose state the training
        step updates (mmjax.data.feedback); it may pass records over or rewrite them.
    """
    ensure_absl_flags_parsed()
    dataset = record_keys(_checked_length(source, config), config).map(
        LoadRow(source, config.strict))
    for transform in transforms:
        dataset = dataset.map(GuardedMap(transform, config.strict))
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=2 * config.batch_size))
    if config.worker_count > 0:
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=config.worker_count,
                                         per_worker_buffer_size=config.worker_buffer_size),
            worker_init_fn=_init_worker)
    iter_dataset = DropSkipped(iter_dataset, counter if counter is not None else SkipCounter())
    if feedback is not None:
        iter_dataset = FeedbackStage(iter_dataset, feedback)
    if batch_fn is not None:
        iter_dataset = iter_dataset.batch(config.batch_size, drop_remainder=config.drop_remainder,
                                          batch_fn=batch_fn)
    return iter_dataset


def skip_counter(dataset: grain.IterDataset) -> SkipCounter:
    """The SkipCounter of a dataset made by `build_dataset`."""
    node = dataset
    while not isinstance(node, DropSkipped):
        if not node.parents:
            raise ValueError("dataset has no DropSkipped stage")
        node = node.parents[0]
    return node.counter

