"""Pipeline stages whose state the training step's rollouts update: online difficulty selection
and adaptive jigsaw difficulty (issue 23).

A `Feedback` sits in the main process between the skip filter and the batcher
(`pipeline.build_dataset(..., feedback=...)`), so it sees each record at the moment a batch
draws it, with the state every earlier step left (the workers upstream may run ahead: they
only read and decode). After each step the GRPO objective hands it every process's rows
(`observe`), so all processes hold the same state; that state is part of the data iterator's
state, so a checkpoint resumes the records and the state together.

    stage = FeedbackStage(parent, feedback)    # an IterDataset, before .batch(...)
    feedback.observe(rows, num_generations=8, step=3)
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

import grain
import numpy as np


class Feedback(Protocol):
    """A main-process pipeline stage driven by the step's rollouts."""

    def apply(self, element: dict[str, Any]) -> dict[str, Any] | None:
        """The record as this step uses it, or None to pass it over (drawn again next epoch).
        Deterministic in the element's (epoch, index) and the state."""

    def observe(self, rows: dict[str, np.ndarray], num_generations: int, step: int) -> None:
        """Updates the state from one step's rollouts of every process, in process order:
        rows["index"], rows["epoch"] [P] (the prompts' record keys), rows["rewards"] [P * G]
        (prompt-major totals) and rows["fn/<name>"] [P * G] (each reward function's values).
        A run has one task (config.data.task), so no task column."""

    def metrics(self, gather: Callable[[dict], list[dict]]) -> dict[str, float]:
        """What the step logs (e.g. online/levels/hard), the same on every process: counts of
        this process's draws go through `gather` (every process's dict, in process order)."""

    def get_state(self) -> dict[str, Any]:
        """JSON-able; `set_state` reads it back exactly."""

    def set_state(self, state: dict[str, Any]) -> None: ...


class _FeedbackIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, feedback: Feedback):
        super().__init__(parent)
        self._feedback = feedback

    def __next__(self) -> Any:
        while True:
            element = self._feedback.apply(next(self._parent))
            if element is not None:
                return element

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "feedback": self._feedback.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if "feedback" not in state:  # written before the stage existed: the records resume, the state starts
            logging.getLogger(__name__).warning("the data state has no %s state; it starts afresh",
                                                type(self._feedback).__name__)
            self._parent.set_state(state)
            return
        self._parent.set_state(state["parent"])
        self._feedback.set_state(state["feedback"])


class FeedbackStage(grain.IterDataset):
    """IterDataset stage that passes each record through `feedback.apply` as it is drawn."""

    def __init__(self, parent: grain.IterDataset, feedback: Feedback):
        super().__init__(parent)
        self.feedback = feedback

    def __iter__(self) -> grain.DatasetIterator:
        return _FeedbackIterator(self._parent.__iter__(), self.feedback)

    def __str__(self) -> str:
        return f"FeedbackStage({type(self.feedback).__name__})"


class FeedbackChain:
    """Several feedback stages as one, applied in order (online selection first: a record it passes
    over is never built); each observes every step and keeps its own state."""

    def __init__(self, *stages: Feedback):
        self.stages = stages

    def apply(self, element: dict[str, Any]) -> dict[str, Any] | None:
        for stage in self.stages:
            element = stage.apply(element)
            if element is None:
                return None
        return element

    def observe(self, rows: dict[str, np.ndarray], num_generations: int, step: int) -> None:
        for stage in self.stages:
            stage.observe(rows, num_generations, step)

    def metrics(self, gather: Callable[[dict], list[dict]]) -> dict[str, float]:
        return {k: v for stage in self.stages for k, v in stage.metrics(gather).items()}

    def get_state(self) -> dict[str, Any]:
        return {"stages": [stage.get_state() for stage in self.stages]}

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["stages"]) != len(self.stages):
            raise ValueError(f"the data state has {len(state['stages'])} feedback stages; this run has "
                             f"{len(self.stages)} ({', '.join(type(s).__name__ for s in self.stages)})")
        for stage, saved in zip(self.stages, state["stages"]):
            stage.set_state(saved)
