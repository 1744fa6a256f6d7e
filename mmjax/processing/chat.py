"""Qwen2.5-VL chat prompts: the official chat template, rendered like transformers does.

Messages use the Hugging Face format:
    [{"role": "system" | "user" | "assistant", "content": str | [item, ...]}, ...]
    item = {"type": "image"} | {"type": "video"} | {"type": "text", "text": str}
Each image item renders as <|vision_start|><|image_pad|><|vision_end|> (one pad token),
each video item as <|vision_start|><|video_pad|><|vision_end|>; `expand_placeholders`
then repeats each pad token once per merged patch of its grid, as Qwen2_5_VLProcessor does.
A system prompt "You are a helpful assistant." is added when the first message is not a
system message.

Public API:
    QWEN2_5_VL_CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT
    render_chat(messages, *, add_generation_prompt=True, add_vision_id=False,
                chat_template=QWEN2_5_VL_CHAT_TEMPLATE) -> str
    expand_placeholders(text, image_grid_thw, video_grid_thw, merge_size) -> str
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import numpy as np

from mmjax.processing.special_tokens import IMAGE_PAD, VIDEO_PAD

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# chat_template.json of Qwen/Qwen2.5-VL-*-Instruct (identical to Qwen2-VL's).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False):
    # transformers overrides jinja's tojson (which HTML-escapes); templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def _compile(chat_template: str) -> jinja2.Template:
    # The environment transformers' apply_chat_template uses (sandboxed, trimmed blocks).
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(chat_template)


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, Sequence) or not all(isinstance(item, Mapping) for item in content):
            raise ValueError(f"message {i}: content must be a string or a list of dicts, got {content!r}")


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    add_vision_id: bool = False,
    chat_template: str = QWEN2_5_VL_CHAT_TEMPLATE,
) -> str:
    """The prompt text, equal to `tokenizer.apply_chat_template(messages, tokenize=False, ...)`."""
    _check_messages(messages)
    return _compile(chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id
    )


_PLACEHOLDER = re.compile(f"({re.escape(IMAGE_PAD)}|{re.escape(VIDEO_PAD)})")


def expand_placeholders(
    text: str,
    image_grid_thw: np.ndarray | None,
    video_grid_thw: np.ndarray | None,
    merge_size: int,
) -> str:
    """Repeat the i-th <|image_pad|> (<|video_pad|>) prod(grid_i) // merge_size**2 times.

    Raises ValueError when the number of placeholders and of grids differ.
    """
    grids = {
        IMAGE_PAD: np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3),
        VIDEO_PAD: np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw).reshape(-1, 3),
    }
    parts = _PLACEHOLDER.split(text)
    found = {token: parts[1::2].count(token) for token in grids}
    for token, kind in ((IMAGE_PAD, "image"), (VIDEO_PAD, "video")):
        if found[token] != len(grids[token]):
            raise ValueError(
                f"text has {found[token]} {token} placeholder(s) but {len(grids[token])} {kind} grid(s) "
                f"were given: one {kind} item in the messages per {kind} passed"
            )
    used = {IMAGE_PAD: 0, VIDEO_PAD: 0}
    for i in range(1, len(parts), 2):
        token = parts[i]
        grid = grids[token][used[token]]
        used[token] += 1
        if grid[1] % merge_size or grid[2] % merge_size:
            raise ValueError(f"grid {grid.tolist()} is not divisible by merge_size {merge_size} in h and w")
        parts[i] = token * (int(np.prod(grid)) // merge_size**2)
    return "".join(parts)
