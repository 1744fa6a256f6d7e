"""Sampled rollouts: log-probs equal a full forward's, sampling follows the warped distribution,
seeds reproduce, and G completions per prompt come from one shared prefill."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from oracle import EOS, VOCAB
from rollout_oracle import completion_logits, full_sequences

STEPS, G = 10, 2
TEMPERATURE, TOP_K, TOP_P = 0.8, 20, 0.9
ALLOWED = np.union1d(np.arange(4, VOCAB, 2), [EOS])  # answer-constrained: even ids and the stop token


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def sampled(pair, prompts):
    _, model = pair
    kw = dict(max_new_tokens=STEPS, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P, num_generations=G,
              allowed_token_ids=ALLOWED)
    return model, kw, model.generate(**prompts.batch(), seed=1, **kw)


def test_logprobs_equal_full_forward(sampled, prompts):
    model, _, out = sampled
    batch, width = full_sequences(prompts, out)
    logits = completion_logits(model.logits(**batch), width, STEPS).astype(np.float64)
    policy = np.take_along_axis(_log_softmax(logits), out.tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs[out.mask], policy[out.mask], atol=1e-5)
    assert (out.logprobs[~out.mask] == 0).all()

    # The distribution sampled from: transformers' warpers on the allowed-set logits.
    restricted = np.where(np.isin(np.arange(VOCAB), ALLOWED), logits, -np.inf)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(TEMPERATURE), TopKLogitsWarper(TOP_K),
                                   TopPLogitsWarper(TOP_P)])
    flat = torch.from_numpy(restricted.reshape(-1, VOCAB))
    warped = warpers(None, flat).numpy().reshape(restricted.shape)
    sampled_lp = np.take_along_axis(_log_softmax(warped), out.tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.sampling_logprobs[out.mask], sampled_lp[out.mask], atol=1e-5)
    assert np.isin(out.tokens[out.mask], ALLOWED).all()


def test_rows_are_prompt_major_with_shared_prompts(sampled, prompts):
    _, _, out = sampled
    n = len(prompts.ids) * G
    np.testing.assert_array_equal(out.prompt_index, np.repeat(np.arange(len(prompts.ids)), G))
    assert out.tokens.shape == (n, STEPS) and out.num_generations == G
    # Completions of one prompt are different samples (same prefill, different keys).
    assert any((out.tokens[2 * p] != out.tokens[2 * p + 1]).any() for p in range(len(prompts.ids)))


def test_seeded_and_reproducible(sampled, prompts):
    model, kw, out = sampled
    again = model.generate(**prompts.batch(), seed=1, **kw)
    np.testing.assert_array_equal(again.tokens, out.tokens)
    np.testing.assert_array_equal(again.logprobs, out.logprobs)
    other = model.generate(**prompts.batch(), seed=2, **kw)
    assert (other.tokens != out.tokens).any()


def test_row_seeds_key_rows_by_id_not_place(sampled, prompts):
    model, kw, out = sampled
    n = len(out.tokens)
    # The default ids are the row numbers; swapping the ids of each prompt's two completions
    # swaps their samples (same prompt, same prefill: only the key differs).
    same = model.generate(**prompts.batch(), seed=1, row_seeds=np.arange(n), **kw)
    np.testing.assert_array_equal(same.tokens, out.tokens)
    swapped = model.generate(**prompts.batch(), seed=1, row_seeds=np.arange(n).reshape(-1, G)[:, ::-1].ravel(), **kw)
    np.testing.assert_array_equal(swapped.tokens, out.tokens.reshape(-1, G, STEPS)[:, ::-1].reshape(n, STEPS))
    for bad in (np.arange(n - 1), np.full(n, -1), np.full(n, 0.5)):
        with pytest.raises(ValueError, match="row_seeds must be"):
            model.generate(**prompts.batch(), seed=1, row_seeds=bad, **kw)


def test_completions_share_the_prompt_cache(pair, prompts, monkeypatch):
    """With G > 1 the decode loop reads the prompt's cache once per prompt (a shared prefix)
    and writes each row's tokens to its own max_new_tokens slots; greedy rows then equal the
    G = 1 rows, whose per-row cache is the transformers-checked path."""
    from mmjax.models import sampler
    _, model = pair
    seen = {}
    decode = sampler._decode

    def spy(module, params, state, consts, **kw):
        seen["own"] = state["cache"][0]["k"].shape
        seen["prefix"] = None if consts["prefix"] is None else consts["prefix"][0][0]["k"].shape
        return decode(module, params, state, consts, **kw)

    monkeypatch.setattr(sampler, "_decode", spy)
    batch = prompts.batch()
    one = model.generate(**batch, max_new_tokens=STEPS, num_generations=1)
    assert seen["prefix"] is None  # G = 1: one cache per row, prompt + new slots
    many = model.generate(**batch, max_new_tokens=STEPS, num_generations=3)
    b, tp = many.prompt_ids.shape
    text = model.config.text
    assert seen["prefix"] == (b, text.num_key_value_heads, tp, text.head_dim)
    assert seen["own"] == (3 * b, text.num_key_value_heads, STEPS, text.head_dim)
    np.testing.assert_array_equal(many.tokens, np.repeat(one.tokens, 3, axis=0))
    np.testing.assert_allclose(many.logprobs, np.repeat(one.logprobs, 3, axis=0), atol=1e-5)
