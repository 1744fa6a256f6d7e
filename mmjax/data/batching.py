"""Samples -> model inputs -> padded, length-bucketed batches (numpy pytrees).

`ProcessSample` (a grain Map, runs in the workers) turns a task sample into
`mmjax.processing.process_sample` arrays plus its answer metadata. A prompt
longer than `max_prompt_length` is never truncated (truncation could cut image
placeholder tokens): it is skipped ("prompt_too_long") or raises, by config.

`Batcher` (the pipeline's batch_fn) pads a list of processed samples with
`mmjax.processing.collate` to a bucketed length (`mmjax.processing.buckets`) and
turns them into the model batch with `mmjax.processing.model_batch`, the function
`Qwen2_5_VL.prepare` calls too: inputs checked, vision pixels padded to a bucket and
the vision tables built here, in the workers. The batch is a dict:

  input_ids int32 [B, L], attention_mask bool [B, L], positions int32 [3, B, L],
  rope_deltas int32 [B, 1], image / video (None or a dict of padded pixels and
  tables): the device part, `arrays(batch)`; the sampler and learner take it as is.
  image_grid_thw, video_grid_thw                int64 [n, 3] (host side, for logging)
  num_images, num_videos, prompt_index         int32 [B]
  meta                                         dict of lists [B]: solution, task,
                                               container, id, where, epoch, index

Repetition for the G completions of a prompt happens on the device, after its images
are encoded once (`mmjax.models.qwen2_5_vl.logprobs`, `mmjax.models.sampler`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from mmjax.data.skips import DataError, Skipped, skip_or_raise
from mmjax.processing.buckets import bucket_size
from mmjax.processing.image import ImageProcessorConfig
from mmjax.processing.model_inputs import DEVICE_KEYS, InputSpec, model_batch
from mmjax.processing.sample import collate, process_sample
from mmjax.processing.special_tokens import SpecialTokenIds

META_KEYS = ("solution", "task", "container", "id", "where", "epoch", "index")


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
      frame_patches: the most patches an image (or video frame) may have, the batch layout's
        (`InputSpec.frame_patches`, from max_pixels); None = no limit. The processor's resize
        can exceed max_pixels when it upscales a small image to min_pixels (HF's rounding up,
        with min_pixels near max_pixels): such a sample is skipped here, not a crash in the batch.
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
    frame_patches: int | None = None

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
        largest = _largest_frame(inputs)
        if self.frame_patches is not None and largest > self.frame_patches:
            return skip_or_raise(self.strict, "image_too_large", where,
                                 f"an image resized to {largest} patches > {self.frame_patches} (max_pixels): "
                                 "upscaled to min_pixels past max_pixels; set min_pixels further below max_pixels")
        length = len(inputs["input_ids"])
        if self.max_prompt_length is not None and length > self.max_prompt_length:
            detail = (f"prompt has {length} tokens > max_prompt_length {self.max_prompt_length};"
                      " not truncated, as that could cut image tokens")
            if self.overlong == "raise":
                raise DataError(f"prompt_too_long at {where}: {detail}")
            return Skipped("prompt_too_long", where, detail)
        meta = {key: element.get(key) for key in META_KEYS}
        return {"inputs": inputs, "meta": meta}


def _largest_frame(inputs: dict[str, Any]) -> int:
    """Patches of the largest image or video frame of a processed sample (0 without any)."""
    grids = [np.asarray(inputs[k]).reshape(-1, 3) for k in ("image_grid_thw", "video_grid_thw")
             if inputs.get(k) is not None]
    return max((int(h) * int(w) for grid in grids for _, h, w in grid), default=0)


@dataclasses.dataclass(frozen=True)
class Batcher:
    """batch_fn: processed samples -> the model batch plus host metadata (module docstring).

    spec: the model's `InputSpec` (`Qwen25VLConfig.input_spec()`): vocabulary, vision
      geometry and the smallest vision bucket.
    bucket_lengths: explicit prompt-length buckets; None uses `mmjax.processing.buckets`' rule.
    """

    pad_id: int
    spec: InputSpec
    bucket_lengths: tuple[int, ...] | None = None
    padding_side: str = "left"

    def __call__(self, processed: Sequence[dict[str, Any]]) -> dict[str, Any]:
        inputs = [p["inputs"] for p in processed]
        longest = max(len(x["input_ids"]) for x in inputs)
        try:
            length = bucket_size(longest, sizes=self.bucket_lengths)
        except ValueError as e:
            raise ValueError(f"a prompt of {longest} tokens: {e}; set max_prompt_length <= the largest "
                             f"bucket") from None
        merge = self.spec.spatial_merge_size
        collated = collate(inputs, pad_id=self.pad_id, padding_side=self.padding_side, pad_to=length,
                           spatial_merge_size=merge)
        has_images, has_videos = len(collated["image_grid_thw"]) > 0, len(collated["video_grid_thw"]) > 0
        batch = model_batch(
            self.spec, collated["input_ids"], collated["attention_mask"],
            pixel_values=collated["pixel_values"] if has_images else None,
            image_grid_thw=collated["image_grid_thw"] if has_images else None,
            pixel_values_videos=collated["pixel_values_videos"] if has_videos else None,
            video_grid_thw=collated["video_grid_thw"] if has_videos else None,
            second_per_grid_ts=collated["second_per_grid_ts"] if has_videos else None,
            position_ids=collated["position_ids"], rope_deltas=collated["rope_deltas"])
        batch["image_grid_thw"] = collated["image_grid_thw"]
        batch["video_grid_thw"] = collated["video_grid_thw"]
        batch["num_images"] = np.asarray([len(x["image_grid_thw"]) for x in inputs], dtype=np.int32)
        batch["num_videos"] = np.asarray([len(x["video_grid_thw"]) for x in inputs], dtype=np.int32)
        batch["prompt_index"] = np.arange(len(inputs), dtype=np.int32)
        batch["meta"] = {key: [p["meta"][key] for p in processed] for key in META_KEYS}
        return batch


def arrays(batch: dict[str, Any]) -> dict[str, Any]:
    """The device part of a batch (`mmjax.processing.model_inputs.DEVICE_KEYS`)."""
    return {key: batch[key] for key in DEVICE_KEYS}
