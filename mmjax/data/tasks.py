"""The sample a task transform emits, and the base class of task transforms.

A sample is the unit the processor turns into tokens and pixels:

  id, where   from the row
  task        reward routing tag ("jigsaw_image", "counting", "math", ...)
  messages    HF chat messages with {"type": "image"/"video"} parts
  images      list of RGB uint8 arrays, in the order the messages reference them
  videos      list of uint8 (T, H, W, 3) arrays
  video_fps   list of floats, the rate of each video's sampled frames
  solution    str ground truth the reward compares with ("3,1,2" for jigsaws)
  container   "answer" or "boxed": where the prompt asks for the answer
  epoch, index  the record key the randomness was drawn from
"""

from __future__ import annotations

import abc
import dataclasses
import zlib
from typing import Any, Sequence

import grain
import numpy as np

from mmjax.data.rng import record_rng
from mmjax.data.skips import Skipped, skip_or_raise
from mmjax import containers


def make_sample(row: dict[str, Any], *, task: str, messages: list[dict[str, Any]],
                solution: str, container: str, images: Sequence[np.ndarray] = (),
                videos: Sequence[np.ndarray] = (), video_fps: Sequence[float] = ()) -> dict[str, Any]:
    return {
        "id": row.get("id", ""),
        "where": row.get("where", ""),
        "task": task,
        "messages": messages,
        "images": list(images),
        "videos": list(videos),
        "video_fps": [float(f) for f in video_fps],
        "solution": solution,
        "container": container,
        "epoch": row.get("epoch", 0),
        "index": row.get("index", 0),
    }


@dataclasses.dataclass(frozen=True)
class TaskTransform(grain.transforms.Map, abc.ABC):
    """A grain Map from a keyed row to a sample, random per (seed, epoch, index).

    The pipeline puts "epoch" and "index" (the source record index) on every row;
    `apply(row, rng)` is the pure task logic and can be called directly in tests.
    A row the task cannot use becomes a counted `Skipped` (or `DataError` if strict).
    """

    seed: int = 0
    container: str = containers.ANSWER
    strict: bool = False

    def __post_init__(self):
        containers.check_container(self.container)

    @abc.abstractmethod
    def apply(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | Skipped:
        """Builds the sample for `row` using only `rng` for randomness."""

    def map(self, element: Any) -> Any:
        if isinstance(element, Skipped):
            return element
        if "epoch" not in element or "index" not in element:
            raise KeyError(f"{type(self).__name__} needs rows keyed with 'epoch' and 'index' (use"
                           " mmjax.data.pipeline); call .apply(row, rng) to use it directly")
        # A stream per transform class keeps chained random transforms independent.
        stream = zlib.crc32(type(self).__name__.encode())
        rng = record_rng(self.seed, element["epoch"], element["index"], stream)
        return self.apply(element, rng)

    def skip(self, row: dict[str, Any], reason: str, detail: str) -> Skipped:
        return skip_or_raise(self.strict, reason, row.get("where", row.get("id", "?")), detail)
