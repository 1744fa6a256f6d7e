"""mmjax.processing.chat: rendering equals transformers' apply_chat_template; placeholder expansion."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.processing.chat import expand_placeholders, render_chat

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"

CONVERSATIONS = {
    "string_content": [{"role": "user", "content": "What is 2 + 2?"}],
    "system_given": [
        {"role": "system", "content": "Answer inside <answer></answer>."},
        {"role": "user", "content": [{"type": "text", "text": "Count the cats."}, {"type": "image"}]},
    ],
    "images_and_video": [
        {"role": "user", "content": [
            {"type": "text", "text": "Tile 1: "}, {"type": "image"},
            {"type": "text", "text": "\nTile 2: "}, {"type": "image", "image": "unused.png"},
            {"type": "video"}, {"type": "text", "text": "Order them."},
        ]},
    ],
    "multi_turn": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat on a chair."}]},
        {"role": "user", "content": "And the colour?"},
    ],
}


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("add_vision_id", [False, True])
def test_render_equals_transformers_apply_chat_template(name, add_generation_prompt, add_vision_id, tiny_tok):
    messages = CONVERSATIONS[name]
    ref = tiny_tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id
    )
    got = render_chat(messages, add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id)
    assert got == ref


def test_render_matches_documented_qwen_format():
    # The prompt format shown in the Qwen2.5-VL model card / README for one image + text.
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chat(messages) == expected
    assert render_chat(messages, add_vision_id=True).count("Picture 1: " + IMG) == 1


def test_bad_messages_raise():
    with pytest.raises(ValueError, match="message 1 must be a dict with 'role' and 'content'"):
        render_chat([{"role": "user", "content": "hi"}, {"text": "no role"}])
    with pytest.raises(ValueError, match="message 0: content must be a string or a list of dicts"):
        render_chat([{"role": "user", "content": ["not a dict"]}])
    with pytest.raises(ValueError, match="list of dicts"):
        render_chat("just a string")


def test_expand_placeholders_counts_and_order():
    text = f"a{IMG}b{VID}c{IMG}d"
    images = np.array([[1, 4, 6], [1, 2, 2]])  # 24/4 = 6 and 4/4 = 1 tokens
    videos = np.array([[2, 4, 4]])  # 32/4 = 8 tokens
    out = expand_placeholders(text, images, videos, merge_size=2)
    expected = (
        "a<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>b"
        "<|vision_start|>" + "<|video_pad|>" * 8 + "<|vision_end|>c"
        "<|vision_start|>" + "<|image_pad|>" * 1 + "<|vision_end|>d"
    )
    assert out == expected


def test_expand_placeholders_mismatch_errors():
    with pytest.raises(ValueError, match=r"2 <\|image_pad\|> placeholder\(s\) but 1 image grid\(s\)"):
        expand_placeholders(IMG + IMG, np.array([[1, 2, 2]]), None, 2)
    with pytest.raises(ValueError, match=r"0 <\|video_pad\|> placeholder\(s\) but 1 video grid\(s\)"):
        expand_placeholders("text only", None, np.array([[2, 2, 2]]), 2)
    with pytest.raises(ValueError, match="not divisible by merge_size"):
        expand_placeholders(IMG, np.array([[1, 3, 2]]), None, 2)
