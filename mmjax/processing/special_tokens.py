"""Qwen2.5-VL special token strings and the ids a model / batch builder needs.

Public API:
    IMAGE_PAD, VIDEO_PAD, VISION_START, VISION_END, IM_START, IM_END, ENDOFTEXT
    QWEN2_SPECIAL_TOKENS       the 22 added tokens of Qwen2.5-VL, in id order from 151643
    SpecialTokenIds            dataclass: image/video/vision start+end/pad/eos ids
        SpecialTokenIds.qwen2_5_vl()        ids of the released checkpoints
        SpecialTokenIds.from_tokenizer(tok) ids looked up in any HF tokenizer
"""

from __future__ import annotations

import dataclasses
from typing import Any

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VISION_PAD = "<|vision_pad|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"

# Qwen2 / Qwen2.5-VL tokenizer.json "added_tokens", in id order starting at 151643.
# The last eight are added tokens that Qwen marks as not special (they stay in decoded text).
QWEN2_SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    IM_START,
    IM_END,
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    VISION_START,
    VISION_END,
    VISION_PAD,
    IMAGE_PAD,
    VIDEO_PAD,
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN2_NON_SPECIAL_ADDED = frozenset(QWEN2_SPECIAL_TOKENS[14:])
QWEN2_FIRST_SPECIAL_ID = 151643


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
    """Token ids a Qwen2.5-VL config and the batch builder need."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    pad_token_id: int
    eos_token_ids: tuple[int, ...]  # generation stops on any of these (<|im_end|>, <|endoftext|>)
    bos_token_id: int  # config.bos_token_id (<|endoftext|>); Qwen never prepends it

    @classmethod
    def qwen2_5_vl(cls) -> "SpecialTokenIds":
        """The ids of the released Qwen2.5-VL checkpoints."""
        ids = {token: QWEN2_FIRST_SPECIAL_ID + i for i, token in enumerate(QWEN2_SPECIAL_TOKENS)}
        return cls._from_lookup(ids.__getitem__)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> "SpecialTokenIds":
        """Looks the tokens up in an HF tokenizer; raises if one is missing."""

        def lookup(token: str) -> int:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
                raise ValueError(f"tokenizer has no token {token!r}")
            return int(token_id)

        return cls._from_lookup(lookup)

    @classmethod
    def _from_lookup(cls, lookup) -> "SpecialTokenIds":
        return cls(
            image_token_id=lookup(IMAGE_PAD),
            video_token_id=lookup(VIDEO_PAD),
            vision_start_token_id=lookup(VISION_START),
            vision_end_token_id=lookup(VISION_END),
            pad_token_id=lookup(ENDOFTEXT),
            eos_token_ids=(lookup(IM_END), lookup(ENDOFTEXT)),
            bos_token_id=lookup(ENDOFTEXT),
        )
