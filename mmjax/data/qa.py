"""Question-answer rows (difficulty-work layout) as samples."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmjax.data import prompts
from mmjax.data.skips import Skipped
from mmjax.data.tasks import TaskTransform, make_sample


@dataclasses.dataclass(frozen=True)
class QaSample(TaskTransform):
    """A row with a prompt (or messages), images and a solution -> sample.

    `default_task` tags rows without a task field; `system_prompt` adds the SPEC
    2.3 system message unless the row brings its own. `layout` orders each user
    turn (`prompts.LAYOUTS`): "image_first" (default) or "question_first", the
    released CMAB script's [question, image] order (`prompts` module doc). Videos
    must already be decoded arrays in `row["videos"]` with `row["video_fps"]`; rows
    that list video paths need a video task transform instead.
    """

    default_task: str = "math"
    system_prompt: bool = True
    layout: str = prompts.IMAGE_FIRST

    def __post_init__(self):
        super().__post_init__()
        prompts.check_layout(self.layout)

    def apply(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | Skipped:
        del rng  # QA samples are deterministic.
        if row.get("solution") is None:
            return self.skip(row, "missing_field", "row has no 'solution'")
        videos = [v for v in row.get("videos", ()) if isinstance(v, np.ndarray)]
        if len(videos) != len(row.get("videos", ())):
            return self.skip(row, "video_not_decoded", "QaSample takes decoded video arrays, got paths")
        try:
            messages = prompts.qa_messages(row.get("messages"), row.get("prompt"), len(row["images"]),
                                           len(videos), self.container, self.system_prompt, self.layout)
        except ValueError as e:
            return self.skip(row, "bad_prompt", str(e))
        return make_sample(row, task=row.get("task") or self.default_task, messages=messages,
                           images=row["images"], videos=videos, video_fps=row.get("video_fps", ()),
                           solution=row["solution"], container=self.container)

    def map(self, element: Any) -> Any:
        # Deterministic, so rows need no (epoch, index) key.
        if isinstance(element, Skipped):
            return element
        return self.apply(element, np.random.default_rng(0))
