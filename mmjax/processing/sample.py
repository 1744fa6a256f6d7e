"""One chat sample -> model inputs (numpy), and padding a list of them into a batch.

`process_sample` does what `Qwen2_5_VLProcessor` + `get_rope_index` do for one sample:
render the chat template, preprocess images/videos, expand each placeholder to its
number of merged patches, tokenize (no BOS/EOS added), and compute the 3-D M-RoPE
positions. `collate` pads samples into a batch without ever truncating; its position_ids
equal transformers' `get_rope_index` on the padded batch (padded positions are 0).

Invariant checked by both (a DESIGN.md trap): in every sample the number of image
(video) placeholder tokens equals the number of merged patches of its images (videos).

Public API:
    process_sample(messages, images=(), videos=(), *, tokenizer, image_cfg, token_ids,
                   add_generation_prompt=True, video_cfg=None, video_fps=None,
                   tokens_per_second=2, add_vision_id=False, chat_template=None) -> dict
        input_ids int32 [T], mm_token_type_ids int32 [T], position_ids int32 [3, T],
        rope_deltas int32 [1], pixel_values float32 [N, D], image_grid_thw int64 [n, 3],
        pixel_values_videos float32 [M, D], video_grid_thw int64 [v, 3],
        second_per_grid_ts float32 [v]
    collate(samples, *, pad_id, padding_side="left", pad_to=None, spatial_merge_size=2) -> dict
        input_ids / attention_mask / mm_token_type_ids int32 [B, L], position_ids int32
        [3, B, L], rope_deltas int32 [B, 1], and the vision arrays concatenated in order.
    check_placeholder_counts(input_ids, image_grid_thw, video_grid_thw, *, image_token_id,
                             video_token_id, merge_size, where="sample")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.processing.chat import QWEN2_5_VL_CHAT_TEMPLATE, expand_placeholders, render_chat
from mmjax.processing.image import ImageLike, ImageProcessorConfig, preprocess_images
from mmjax.processing.mrope import get_rope_index, mm_token_type_ids
from mmjax.processing.special_tokens import SpecialTokenIds
from mmjax.processing.video import preprocess_videos

TOKEN_KEYS = ("input_ids", "mm_token_type_ids")
VISION_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
SAMPLE_KEYS = (*TOKEN_KEYS, "position_ids", "rope_deltas", *VISION_KEYS)


def _merged_tokens(grid_thw: np.ndarray, merge_size: int) -> int:
    return int(np.prod(np.asarray(grid_thw).reshape(-1, 3), axis=-1).sum()) // merge_size**2


def check_placeholder_counts(
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray,
    video_grid_thw: np.ndarray,
    *,
    image_token_id: int,
    video_token_id: int,
    merge_size: int,
    where: str = "sample",
) -> None:
    """Raises ValueError unless #image (video) tokens == merged patches of the image (video) grids."""
    input_ids = np.asarray(input_ids)
    for name, token_id, grids in (
        ("image", image_token_id, image_grid_thw),
        ("video", video_token_id, video_grid_thw),
    ):
        found = int(np.count_nonzero(input_ids == token_id))
        expected = _merged_tokens(grids, merge_size)
        if found != expected:
            raise ValueError(
                f"{where}: {found} {name} placeholder tokens (id {token_id}) but the {name} grids "
                f"{np.asarray(grids).reshape(-1, 3).tolist()} have {expected} merged patches; was the "
                f"prompt truncated, or does the tokenizer lack the placeholder token?"
            )


def process_sample(
    messages: Sequence[Mapping[str, Any]],
    images: Sequence[ImageLike] = (),
    videos: Sequence[np.ndarray] = (),
    *,
    tokenizer: Any,
    image_cfg: ImageProcessorConfig,
    token_ids: SpecialTokenIds,
    add_generation_prompt: bool = True,
    video_cfg: ImageProcessorConfig | None = None,
    video_fps: float | Sequence[float | None] | None = None,
    tokens_per_second: int = 2,
    add_vision_id: bool = False,
    chat_template: str | None = None,
) -> dict[str, np.ndarray]:
    """Model inputs for one chat sample (see the module docstring for keys and shapes).

    `images` / `videos` are given in the order their items appear in `messages`; videos
    are already-sampled frames [F, H, W, 3] uint8 at `video_fps` (None: 24, as in
    transformers). `video_cfg` defaults to `image_cfg` (a Qwen2.5-VL checkpoint's video
    processor reads the same preprocessor_config.json). `tokens_per_second` is the vision
    config's (2 in the released Qwen2.5-VL checkpoints).
    """
    video_cfg = video_cfg or image_cfg
    if video_cfg.merge_size != image_cfg.merge_size:
        raise ValueError(f"image and video merge_size differ: {image_cfg.merge_size} vs {video_cfg.merge_size}")
    merge = image_cfg.merge_size
    text = render_chat(
        messages,
        add_generation_prompt=add_generation_prompt,
        add_vision_id=add_vision_id,
        chat_template=chat_template or QWEN2_5_VL_CHAT_TEMPLATE,
    )
    image_inputs = preprocess_images(list(images), image_cfg)
    video_inputs = preprocess_videos(list(videos), video_cfg, video_fps)
    text = expand_placeholders(text, image_inputs["image_grid_thw"], video_inputs["video_grid_thw"], merge)
    input_ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int32)
    check_placeholder_counts(
        input_ids,
        image_inputs["image_grid_thw"],
        video_inputs["video_grid_thw"],
        image_token_id=token_ids.image_token_id,
        video_token_id=token_ids.video_token_id,
        merge_size=merge,
    )
    types = mm_token_type_ids(input_ids, token_ids.image_token_id, token_ids.video_token_id)
    position_ids, rope_deltas = get_rope_index(
        input_ids[None],
        None,
        image_inputs["image_grid_thw"],
        video_inputs["video_grid_thw"],
        video_inputs["second_per_grid_ts"],
        spatial_merge_size=merge,
        image_token_id=token_ids.image_token_id,
        video_token_id=token_ids.video_token_id,
        tokens_per_second=tokens_per_second,
        vision_start_token_id=token_ids.vision_start_token_id,
        mm_token_type_ids=types[None],
    )
    return {
        "input_ids": input_ids,
        "mm_token_type_ids": types,
        "position_ids": position_ids[:, 0],
        "rope_deltas": rope_deltas[0],
        **image_inputs,
        **video_inputs,
    }


def collate(
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    pad_id: int,
    padding_side: str = "left",
    pad_to: int | None = None,
    spatial_merge_size: int = 2,
) -> dict[str, np.ndarray]:
    """Pads `process_sample` outputs to a batch of length max(T) (or `pad_to`; never truncates)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not samples:
        raise ValueError("collate got no samples")
    for i, sample in enumerate(samples):
        missing = [key for key in SAMPLE_KEYS if key not in sample]
        if missing:
            raise ValueError(f"sample {i} lacks {missing}; build samples with process_sample")
        types = np.asarray(sample["mm_token_type_ids"])
        # Type ids are 1 exactly at image tokens and 2 at video tokens, so they stand in for the ids.
        check_placeholder_counts(
            types,
            sample["image_grid_thw"],
            sample["video_grid_thw"],
            image_token_id=1,
            video_token_id=2,
            merge_size=spatial_merge_size,
            where=f"sample {i}",
        )
    lengths = [len(sample["input_ids"]) for sample in samples]
    length = max(lengths) if pad_to is None else pad_to
    if max(lengths) > length:
        longest = int(np.argmax(lengths))
        raise ValueError(f"sample {longest} has {lengths[longest]} tokens, more than pad_to={pad_to}")

    batch = len(samples)
    input_ids = np.full((batch, length), pad_id, dtype=np.int32)
    attention_mask = np.zeros((batch, length), dtype=np.int32)
    types = np.zeros((batch, length), dtype=np.int32)
    position_ids = np.zeros((3, batch, length), dtype=np.int32)
    for b, (sample, n) in enumerate(zip(samples, lengths)):
        span = slice(length - n, length) if padding_side == "left" else slice(0, n)
        input_ids[b, span] = sample["input_ids"]
        attention_mask[b, span] = 1
        types[b, span] = sample["mm_token_type_ids"]
        position_ids[:, b, span] = sample["position_ids"]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": types,
        "position_ids": position_ids,
        "rope_deltas": np.stack([np.asarray(s["rope_deltas"], dtype=np.int32).reshape(1) for s in samples]),
        **{key: np.concatenate([np.asarray(s[key]) for s in samples]) for key in VISION_KEYS},
    }
