"""Host-side Qwen2.5-VL processing (numpy): images, videos, chat prompts, tokens, M-RoPE.

Everything here matches transformers 5.24 value for value (see each module's docstring).
Typical use, one sample then a batch:

    tok = tiny_tokenizer()                      # or qwen2_tokenizer()
    ids = special_token_ids(tok)
    sample = process_sample(messages, images, tokenizer=tok,
                            image_cfg=ImageProcessorConfig(), token_ids=ids)
    batch = collate([sample, ...], pad_id=ids.pad_token_id)
"""

from mmjax.processing.chat import (
    DEFAULT_SYSTEM_PROMPT,
    QWEN2_5_VL_CHAT_TEMPLATE,
    expand_placeholders,
    render_chat,
)
from mmjax.processing.image import ImageProcessorConfig, preprocess_images, smart_resize
from mmjax.processing.mrope import get_rope_index, mm_token_type_ids
from mmjax.processing.sample import check_placeholder_counts, collate, process_sample
from mmjax.processing.special_tokens import SpecialTokenIds
from mmjax.processing.tokenizer import qwen2_tokenizer, special_token_ids, tiny_tokenizer
from mmjax.processing.video import preprocess_video, preprocess_videos

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "ImageProcessorConfig",
    "SpecialTokenIds",
    "check_placeholder_counts",
    "collate",
    "expand_placeholders",
    "get_rope_index",
    "mm_token_type_ids",
    "preprocess_images",
    "preprocess_video",
    "preprocess_videos",
    "process_sample",
    "qwen2_tokenizer",
    "render_chat",
    "smart_resize",
    "special_token_ids",
    "tiny_tokenizer",
]
