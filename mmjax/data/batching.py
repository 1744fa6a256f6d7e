"""Samples -> model inputs -> padded, length-bucketed batches (numpy pytrees).

`ProcessSample` (a grain Map, runs in the workers) turns a task sample into
`mmjax.processing.process_sample` arrays plus its answer metadata. A prompt
longer than `max_prompt_length` is never truncated (truncation could cut image
placeholder tokens): it is skipped ("prompt_too_long") or raises, by config.

`Batcher` (the pipeline's batch_fn) pads a list of processed samples with
`mmjax.processing.collate` to the smallest of a few fixed bucket lengths, so
the number of distinct jitted shapes stays small, and adds per-prompt counts and
answer metadata. The batch is a dict:

  input_ids, attention_mask, mm_token_type_ids  int32 [B, L]
  position_ids                                 int32 [3, B, L]  (M-RoPE)
  rope_deltas                                  int32 [B, 1]
  pixel_values, image_grid_thw                 float32 [N, D], int64 [n_images, 3]
  pixel_values_videos, video_grid_thw,
  second_per_grid_ts                           the same for videos
  num_images, num_videos, prompt_index         int32 [B]
  meta                                         dict of lists [B]: solution, task,
                                               container, id, where, epoch, index

`repeat_for_generations(batch, G)` gives each prompt G consecutive rows and
repeats every per-prompt array with it (position ids and vision grids included).
Vision arrays keep their natural sizes (they vary with image sizes).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from mmjax.data.skips import DataError, Skipped, skip_or_raise
from mmjax.processing.image import ImageProcessorConfig
from mmjax.processing.sample import collate, process_sample
from mmjax.processing.special_tokens import SpecialTokenIds

META_KEYS = ("solution", "task", "container", "id", "where", "epoch", "index")
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "rope_deltas", "num_images",
            "num_videos", "prompt_index")
DEFAULT_BUCKETS = (256, 512, 1024, 2048, 4096)


@dataclasses.dataclass(frozen=True)
class ProcessSample(grain.transforms.Map):
    """Task sample -> {"inputs": process_sample arrays, "meta": answer metadata}.

    Attributes:
      tokenizer: HF tokenizer with the Qwen special tokens.
      image_cfg: image processor settings (also used for videos unless video_cfg).
      token_ids: special token ids (looked up in the tokenizer if None).
      video_cfg: video processor settings.
      tokens_per_second: the vision config's value (2 for Qwen2.5-VL).
      max_prompt_length: longest prompt in tokens; None = no limit.
      overlong: "skip" or "raise" for prompts over `max_prompt_length`.
      strict: raise instead of skipping samples the processor rejects.
    """

    tokenizer: Any
    image_cfg: ImageProcessorConfig = ImageProcessorConfig()
    token_ids: SpecialTokenIds | None = None
    video_cfg: ImageProcessorConfig | None = None
    tokens_per_second: int = 2
    max_prompt_length: int | None = None
    overlong: str = "skip"
    strict: bool = False

    def __post_init__(self):
        if self.overlong not in ("skip", "raise"):
            raise ValueError(f"overlong must be 'skip' or 'raise', got {self.overlong!r}")
        if self.token_ids is None:
            object.__setattr__(self, "token_ids", SpecialTokenIds.from_tokenizer(self.tokenizer))

    def map(self, element: Any) -> Any:
        if isinstance(element, Skipped):
            return element
        where = element.get("where", element.get("id", "?"))
        try:
            inputs = process_sample(element["messages"], element["images"], element.get("videos", ()),
                                    tokenizer=self.tokenizer, image_cfg=self.image_cfg,
                                    token_ids=self.token_ids, video_cfg=self.video_cfg,
                                    video_fps=element.get("video_fps") or None,
                                    tokens_per_second=self.tokens_per_second)
        except ValueError as e:  # e.g. an extreme aspect ratio, placeholders not matching inputs
            return skip_or_raise(self.strict, "processing_error", where, str(e))
        length = len(inputs["input_ids"])
        if self.max_prompt_length is not None and length > self.max_prompt_length:
            detail = (f"prompt has {length} tokens > max_prompt_length {self.max_prompt_length};"
                      " not truncated, as that could cut image tokens")
            if self.overlong == "raise":
                raise DataError(f"prompt_too_long at {where}: {detail}")
            return Skipped("prompt_too_long", where, detail)
        meta = {key: element.get(key) for key in META_KEYS}
        return {"inputs": inputs, "meta": meta}


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= length; ValueError if none fits."""
    fitting = [b for b in sorted(buckets) if b >= length]
    if not fitting:
        raise ValueError(f"a prompt of {length} tokens exceeds the largest bucket {max(buckets)};"
                         " set max_prompt_length <= the largest bucket")
    return fitting[0]


@dataclasses.dataclass(frozen=True)
class Batcher:
    """batch_fn: processed samples -> padded batch (see the module docstring)."""

    pad_id: int
    bucket_lengths: tuple[int, ...] = DEFAULT_BUCKETS
    padding_side: str = "left"
    spatial_merge_size: int = 2

    def __call__(self, processed: Sequence[dict[str, Any]]) -> dict[str, Any]:
        inputs = [p["inputs"] for p in processed]
        longest = max(len(x["input_ids"]) for x in inputs)
        batch = collate(inputs, pad_id=self.pad_id, padding_side=self.padding_side,
                        pad_to=bucket_length(longest, self.bucket_lengths),
                        spatial_merge_size=self.spatial_merge_size)
        batch["num_images"] = np.asarray([len(x["image_grid_thw"]) for x in inputs], dtype=np.int32)
        batch["num_videos"] = np.asarray([len(x["video_grid_thw"]) for x in inputs], dtype=np.int32)
        batch["prompt_index"] = np.arange(len(inputs), dtype=np.int32)
        batch["meta"] = {key: [p["meta"][key] for p in processed] for key in META_KEYS}
        return batch


def _repeat_blocks(array: np.ndarray, block_sizes: np.ndarray, times: int) -> np.ndarray:
    """Repeats each consecutive block of rows (sizes `block_sizes`) `times` times in place."""
    starts = np.concatenate([[0], np.cumsum(block_sizes)[:-1]]).astype(np.int64)
    rows = [np.arange(s, s + n) for s, n in zip(starts, block_sizes) for _ in range(times)]
    index = np.concatenate(rows) if rows else np.zeros((0,), np.int64)
    return array[index]


def repeat_for_generations(batch: dict[str, Any], num_generations: int) -> dict[str, Any]:
    """Each prompt's rows, positions, pixels and grids repeated for its G completions.

    Row b of the input becomes rows b*G .. b*G+G-1; vision arrays follow the same
    order, so the result equals a batch built from each sample listed G times.
    """
    g = num_generations
    if g < 1:
        raise ValueError(f"num_generations must be >= 1, got {g}")
    out = {key: np.repeat(batch[key], g, axis=0) for key in ROW_KEYS}
    out["position_ids"] = np.repeat(batch["position_ids"], g, axis=1)
    for prefix, count_key, pixel_key in (("image", "num_images", "pixel_values"),
                                         ("video", "num_videos", "pixel_values_videos")):
        grids = batch[f"{prefix}_grid_thw"]
        per_prompt = batch[count_key]
        patches = np.prod(grids, axis=-1) if len(grids) else np.zeros((0,), np.int64)
        patches_per_prompt = np.asarray([patches[s:s + n].sum() for s, n in
                                         zip(np.cumsum(per_prompt) - per_prompt, per_prompt)],
                                        dtype=np.int64)
        out[f"{prefix}_grid_thw"] = _repeat_blocks(grids, per_prompt, g)
        out[pixel_key] = _repeat_blocks(batch[pixel_key], patches_per_prompt, g)
    out["second_per_grid_ts"] = _repeat_blocks(batch["second_per_grid_ts"], batch["num_videos"], g)
    out["meta"] = {key: [v for v in values for _ in range(g)]
                   for key, values in batch["meta"].items()}
    return out


def arrays(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    """The array part of a batch (what goes to devices); `meta` stays on the host."""
    return {key: value for key, value in batch.items() if key != "meta"}
