"""Greedy rollouts equal transformers' `generate` token for token (images, padding, stops)."""

from __future__ import annotations

import numpy as np
import pytest

import mmjax.models.qwen2_5_vl as qwen
from mmjax.processing.buckets import bucket_size
from oracle import EOS, PAD, build_hf_model, pad_batch
from rollout_oracle import hf_generate, make_prompts

STEPS = 10


def _compare(hf_model, model, batch, eos: int, **kw):
    ref = hf_generate(hf_model, batch, max_new_tokens=STEPS, do_sample=False, eos_token_id=eos,
                      pad_token_id=PAD)
    out = model.generate(**batch, max_new_tokens=STEPS, eos_token_ids=[eos], pad_token_id=PAD, **kw)
    np.testing.assert_array_equal(out.tokens[:, :ref.shape[1]], ref)
    assert (out.tokens[:, ref.shape[1]:] == PAD).all()
    hit = (ref == eos).any(1)
    first_eos = np.where(hit, (ref == eos).argmax(1) + 1, STEPS)
    np.testing.assert_array_equal(out.lengths, first_eos)
    np.testing.assert_array_equal(out.mask, np.arange(STEPS)[None] < first_eos[:, None])
    np.testing.assert_array_equal(out.stopped, hit)
    return out


def _check_against_hf(hf_model, model, batch, **kw):
    out = _compare(hf_model, model, batch, EOS, **kw)
    # Stop on a token row 0 emits mid-way: rows end at its first occurrence, padded after.
    stop = int(out.tokens[0, STEPS // 2])
    assert _compare(hf_model, model, batch, stop, **kw).stopped[0]


def test_greedy_equals_transformers(pair, prompts):
    hf_model, model = pair
    _check_against_hf(hf_model, model, prompts.batch())


def test_greedy_equals_transformers_tied_mqa(tmp_path):
    # Tied embeddings, one KV head, three layers, bigger images with several windows; the
    # prompt (48 tokens after bucketing) prefilled in 3 chunks of 16.
    hf_model = build_hf_model(str(tmp_path), seed=11, tie=True, kv_heads=1, layers=3)
    model = qwen.load_hf(str(tmp_path), progress=False)
    prompts = make_prompts(5, [([3, 2, 4], [(1, 8, 8), (1, 4, 6)]), ([1, 7], [(1, 6, 4)])])
    batch = prompts.batch()
    assert batch["input_ids"].shape[1] > 32
    _check_against_hf(hf_model, model, batch, prefill_chunk=16)


def test_greedy_row_does_not_depend_on_the_batch(pair, prompts):
    _, model = pair
    together = model.generate(**prompts.batch(), max_new_tokens=STEPS, eos_token_ids=[])
    reversed_ = model.generate(**prompts.batch([2, 1, 0]), max_new_tokens=STEPS, eos_token_ids=[])
    alone = model.generate(**prompts.batch([0]), max_new_tokens=STEPS, eos_token_ids=[])  # less padding
    np.testing.assert_array_equal(reversed_.tokens, together.tokens[::-1])
    np.testing.assert_array_equal(alone.tokens[0], together.tokens[0])
    np.testing.assert_allclose(alone.logprobs[0], together.logprobs[0], atol=1e-5)


def test_generate_rejects_right_padding(pair, prompts):
    _, model = pair
    ids, mask = pad_batch([prompts.ids[2], prompts.ids[2][:4]], side="right")
    with pytest.raises(ValueError, match=r"left-padded.*rows \[1\]"):
        model.generate(ids, mask, max_new_tokens=2)


def test_prompts_at_an_explicit_bucket_are_not_padded_again(pair, prompts):
    # The pipeline pads to config.data.bucket_lengths; the sampler keeps such a batch as it is
    # (the rule would pad it again) and the padding changes no real output.
    _, model = pair
    batch = prompts.batch()
    t = batch["input_ids"].shape[1]
    rule = bucket_size(t)
    own = next(n for n in range(t, rule) if bucket_size(n) != n)  # a length the rule never picks
    by_rule = model.generate(**batch, max_new_tokens=STEPS, eos_token_ids=[])
    kept = model.generate(**batch, max_new_tokens=STEPS, eos_token_ids=[], bucket_lengths=(own, 4 * rule))
    assert by_rule.prompt_ids.shape[1] == rule > own == kept.prompt_ids.shape[1]
    np.testing.assert_array_equal(kept.tokens, by_rule.tokens)
    np.testing.assert_allclose(kept.logprobs, by_rule.logprobs, atol=1e-5)
    with pytest.raises(ValueError, match=rf"prompts of {t} tokens do not fit bucket_lengths"):
        model.generate(**batch, max_new_tokens=STEPS, bucket_lengths=(t - 1,))
