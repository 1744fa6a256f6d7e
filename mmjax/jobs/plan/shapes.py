"""The worst-case inputs a recipe allows, as the host would build them (numpy, no weights).

The planner compiles each program for the largest shapes a run of the recipe can meet: the
largest prompt (its images at `data.max_pixels`, or its video clips at their most frames, cut
to `data.max_prompt_length` when the recipe skips longer prompts), bucketed as the pipeline
buckets it, repeated over the global batch (`data.batch_size` x `plan.processes` prompts),
and completions of `grpo.max_completion_length` tokens. The batches come from
`mmjax.processing.model_batch`, the pipeline's own function, so their vision tables and
positions have the shapes a real batch has.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mmjax.processing.buckets import bucket_size
from mmjax.processing.model_inputs import InputSpec, model_batch

TEXT_ID = 100  # any id that is not special: the values do not matter to a compile, only the shapes


@dataclasses.dataclass(frozen=True)
class WorstPrompt:
    """The largest prompt of a recipe: its text tokens and vision grids (t, h, w in patches)."""
    text_tokens: int
    images: tuple[tuple[int, int, int], ...] = ()
    videos: tuple[tuple[int, int, int], ...] = ()
    merge: int = 2

    def vision_tokens(self) -> int:
        return sum(t * h * w for t, h, w in self.images + self.videos) // self.merge ** 2

    def length(self) -> int:
        """Tokens of the prompt: text, and each image / video with its start and end markers."""
        return self.text_tokens + self.vision_tokens() + 2 * len(self.images + self.videos)


def largest_grid(tokens: int, merge: int = 2, frames: int = 1) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of a frame of at most `tokens` merged tokens, the most there are
    (h x w as close to square as that allows), over `frames` temporal patches."""
    best = max(range(1, tokens + 1), key=lambda h: (h * (tokens // h), -abs(h - tokens // h)))
    return frames, best * merge, tokens // best * merge


def worst_prompt(data, text_tokens: int, merge: int = 2) -> WorstPrompt:
    """The largest prompt config.data allows for its task (SPEC 1.1-1.3 jigsaws, SPEC 2.3 qa)."""
    per_frame = data.max_pixels // (14 * merge) ** 2  # merged tokens of one image at max_pixels
    if data.task == "jigsaw_image":  # every tile is an image of its own, each up to max_pixels
        tiles = data.jigsaw_rows * data.jigsaw_cols
        prompt = WorstPrompt(text_tokens, images=(largest_grid(per_frame, merge),) * tiles, merge=merge)
    elif data.task == "jigsaw_video":  # K clips, each a video of at most video_max_frames frames
        frame_tokens = min(data.video_frame_pixels, data.max_pixels) // (14 * merge) ** 2
        frames = max(1, data.video_max_frames // 2)  # 2 frames per temporal patch
        prompt = WorstPrompt(text_tokens, videos=(largest_grid(frame_tokens, merge, frames),) * data.video_clips,
                             merge=merge)
    else:  # qa and jigsaw_3d: one image
        prompt = WorstPrompt(text_tokens, images=(largest_grid(per_frame, merge),), merge=merge)
    limit = data.max_prompt_length
    if limit and prompt.length() > limit:  # longer prompts are skipped: the largest kept one
        budget = limit - text_tokens - 2 * len(prompt.images + prompt.videos)
        if budget < len(prompt.images + prompt.videos):
            raise ValueError(f"config.data.max_prompt_length={limit} leaves no room for the vision tokens of "
                             f"a prompt with {text_tokens} text tokens (config.plan.text_tokens)")
        each = budget // len(prompt.images + prompt.videos)
        if prompt.images:
            prompt = dataclasses.replace(prompt, images=(largest_grid(each, merge),) * len(prompt.images))
        else:
            t = prompt.videos[0][0]
            clip = largest_grid(max(1, each // t), merge, t)
            prompt = dataclasses.replace(prompt, videos=(clip,) * len(prompt.videos))
    return prompt


def prompt_ids(prompt: WorstPrompt, spec: InputSpec) -> np.ndarray:
    """One prompt's token ids: the vision blocks (start, placeholders, an end slot), then the text."""
    ids = []
    for grids, token in ((prompt.images, spec.image_token_id), (prompt.videos, spec.video_token_id)):
        for t, h, w in grids:
            ids += [spec.vision_start_token_id] + [token] * (t * h * w // prompt.merge ** 2) + [TEXT_ID]
    return np.asarray(ids + [TEXT_ID] * prompt.text_tokens, np.int32)


def prompt_batch(prompt: WorstPrompt, spec: InputSpec, rows: int,
                 bucket_lengths: tuple[int, ...] | None = None) -> dict:
    """The model batch of `rows` copies of `prompt`, left-padded to its bucket (numpy)."""
    ids = prompt_ids(prompt, spec)
    length = bucket_size(len(ids), sizes=bucket_lengths or None)
    padded = np.zeros((rows, length), np.int32)
    padded[:, length - len(ids):] = ids
    mask = np.zeros((rows, length), bool)
    mask[:, length - len(ids):] = True
    kw = {}
    for grids, key in ((prompt.images, "image"), (prompt.videos, "video")):
        if grids:
            grid = np.asarray(grids * rows, np.int64)
            pixels = np.zeros((int(np.prod(grid, axis=1).sum()), spec.patch_dim), np.float32)
            if key == "image":
                kw.update(pixel_values=pixels, image_grid_thw=grid)
            else:
                kw.update(pixel_values_videos=pixels, video_grid_thw=grid,
                          second_per_grid_ts=np.ones(len(grid), np.float32))
    return model_batch(spec, padded, mask, **kw)
