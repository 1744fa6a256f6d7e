"""Benchmark items -> model answers: render, process, batch, generate, decode.

Items are ordered by (image count, pixels, prompt length) so that a batch holds similar
prompts, then cut into batches of `batch_size`; the last batch is filled up with copies of
its last item (answers dropped), so every batch has the same rows. The Batcher pads each
batch to a bucketed prompt length and vision size (`mmjax.processing.buckets`), so a run
compiles the sampler for a handful of shapes. Decoding is greedy unless a temperature is
set (`SamplingParams`); row n of batch b samples with seed `seed + b`.

Images are decoded batch by batch (the next one on a host thread while the device samples,
`mmjax.models.batched_generation`), not all up front: a benchmark's images need not fit in
memory. A failure on an item (an unreadable image, a prompt the processor refuses) raises
`BenchmarkError` naming its file and line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmjax.config_help import help_text
from mmjax.data import batching
from mmjax.data import images as images_lib
from mmjax.data.skips import DataError
from mmjax.eval.benchmarks import BenchmarkError, Item
from mmjax.models import batched_generation as batched
from mmjax.models import sampler
from mmjax.models.sampling import SamplingParams
from mmjax.processing import ImageProcessorConfig, special_token_ids


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str  # the completion, without its end-of-sequence token
    num_tokens: int  # generated tokens, the end-of-sequence token included
    stopped: bool  # False: cut at max_new_tokens


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    batch_size: int = dataclasses.field(default=8, metadata=help_text("prompts per generate call (mmjax)"))
    max_new_tokens: int = dataclasses.field(default=1024, metadata=help_text(
        "most tokens per answer; SPEC 2.4's max completion (Visual Jigsaw trains with 2048)"))
    temperature: float = dataclasses.field(default=0.0, metadata=help_text(
        "0 = greedy (mmjax.models.sampling.SamplingParams)"))
    top_p: float = dataclasses.field(default=1.0, metadata=help_text("nucleus mass, only with temperature > 0"))
    seed: int = dataclasses.field(default=0, metadata=help_text("sampling keys (temperature > 0)"))
    min_vision_rows: int = dataclasses.field(default=64, metadata=help_text(
        "smallest vision patch-row bucket (config.data.min_vision_rows)"))
    bucket_lengths: tuple[int, ...] | None = dataclasses.field(default=None, metadata=help_text(
        "prompt-length buckets; None = mmjax.processing.buckets' rule (config.data.bucket_lengths)"))
    progress: bool = dataclasses.field(default=True, metadata=help_text("a tqdm bar per benchmark"))

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        SamplingParams(self.temperature, self.top_p)  # its own range checks


Render = Callable[[Item, list[np.ndarray]], dict[str, Any]]


class Runner:
    """Answers of one model to lists of items (one `run` per benchmark)."""

    def __init__(self, model, tok, image_cfg: ImageProcessorConfig, cfg: RunnerConfig = RunnerConfig(),
                 allowed_token_ids: Sequence[int] | None = None):
        """allowed_token_ids: answers use only these tokens (config.sample.allowed_tokens, as the model
        was trained to answer); None = the whole vocabulary."""
        self.model, self.tok, self.cfg, self.allowed = model, tok, cfg, allowed_token_ids
        ids = special_token_ids(tok)
        self.eos, self.pad = tuple(ids.eos_token_ids), int(ids.pad_token_id)
        self.process = batching.ProcessSample(tok, image_cfg=image_cfg, token_ids=ids, strict=True,
                                              tokens_per_second=model.config.vision.tokens_per_second)
        spec = model.config.input_spec(min_vision_rows=cfg.min_vision_rows, max_pixels=image_cfg.max_pixels)
        self.batcher = batching.Batcher(pad_id=self.pad, spec=spec, bucket_lengths=cfg.bucket_lengths)
        self.sampling = SamplingParams(cfg.temperature, cfg.top_p)

    def run(self, items: Sequence[Item], render: Render, desc: str = "") -> list[Generation]:
        """One Generation per item, in the items' order."""
        from tqdm.auto import tqdm

        order = sorted(range(len(items)), key=lambda i: _shape_key(items[i]))
        out: list[Generation | None] = [None] * len(items)

        def build(chunk: list[int]) -> dict[str, Any]:
            processed = [self._processed(items[i], render) for i in chunk]
            return batching.arrays(self.batcher(batched.pad_rows(processed, self.cfg.batch_size)))

        def generate(number: int, _, batch: dict[str, Any]):
            model = self.model
            return sampler.generate(model.module, model.params, batch, max_new_tokens=self.cfg.max_new_tokens,
                                    sampling=self.sampling, seed=self.cfg.seed + number, eos_token_ids=self.eos,
                                    pad_token_id=self.pad, mesh=model.mesh, bucket_lengths=self.cfg.bucket_lengths,
                                    allowed_token_ids=self.allowed)

        with tqdm(total=len(items), desc=desc or None, unit="q", disable=not self.cfg.progress) as bar:
            for _, chunk, rollout in batched.generate_batches(batched.chunks(order, self.cfg.batch_size),
                                                              build, generate):
                answers = rollout.completion_ids()  # without the stop token: it is not text
                for row, i in enumerate(chunk):  # the padding copies' rows are dropped
                    out[i] = Generation(self.tok.decode(answers[row]), int(rollout.lengths[row]),
                                        bool(rollout.stopped[row]))
                bar.update(len(chunk))
        return out

    def _processed(self, item: Item, render: Render) -> dict[str, Any]:
        decoded = []
        for path in item.image_paths:
            try:
                decoded.append(images_lib.decode_image(path))
            except (OSError, ValueError, SyntaxError) as e:  # FileNotFoundError is an OSError
                raise BenchmarkError(f"{item.where}: image {path} is unreadable ({type(e).__name__}: {e})") from None
        sample = render(item, decoded)
        try:
            return self.process.map(sample)
        except DataError as e:
            raise BenchmarkError(f"{item.where}: {e}") from None


def _shape_key(item: Item) -> tuple[int, int, int]:
    return len(item.image_sizes), sum(h * w for h, w in item.image_sizes), len(item.prompt)
