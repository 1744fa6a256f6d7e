"""Token choice against transformers' logits warpers, buckets and key groups by hand."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from mmjax.processing.buckets import bucket_size
from mmjax.models.capture import key_groups
from mmjax.models.sampling import SamplingParams, choose, warp


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 0.9), (0.7, 5, 1.0), (1.3, 40, 0.5),
                                                     (1.0, 1, 1.0), (0.5, 0, 1e-4)])
def test_warp_equals_transformers_warpers(temperature, top_k, top_p):
    logits = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32) * 3
    ref_warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        ref_warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        ref_warpers.append(TopPLogitsWarper(top_p))
    ref = LogitsProcessorList(ref_warpers)(None, torch.from_numpy(logits)).numpy()
    got = np.asarray(warp(logits, SamplingParams(temperature, top_p, top_k)))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], rtol=1e-6)


def test_choose_greedy_restricted_and_sampled_support():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 50)).astype(np.float32)
    allowed = np.zeros(50, bool)
    allowed[[3, 17, 31]] = True
    keys = jax.random.split(jax.random.key(0), 3)
    tok, lp, slp = choose(logits, keys, SamplingParams(), allowed)
    np.testing.assert_array_equal(tok, np.array([3, 17, 31])[logits[:, [3, 17, 31]].argmax(1)])
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(lp, log_softmax[np.arange(3), tok], atol=1e-6)
    assert (np.asarray(slp) == 0).all()
    # top_k=2: every draw is one of the two largest logits of its row.
    draws = np.stack([np.asarray(choose(logits, jax.random.split(jax.random.key(s), 3),
                                        SamplingParams(1.0, 1.0, 2))[0]) for s in range(20)])
    top2 = np.argsort(-logits, axis=1)[:, :2]
    assert all(np.isin(draws[:, r], top2[r]).all() for r in range(3))


def test_sampling_params_reject_bad_values():
    for kw in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2)):
        with pytest.raises(ValueError):
            SamplingParams(**kw)


def test_bucket_size():
    got = [bucket_size(n) for n in (1, 16, 17, 24, 25, 33, 48, 49, 193, 256, 257, 300, 385, 1024, 1025, 1700)]
    assert got == [16, 16, 24, 24, 32, 48, 48, 64, 256, 256, 320, 320, 448, 1024, 1280, 1792]
    # Above 256, four buckets per octave: under a fifth of any bucket is padding.
    for n in range(257, 5000):
        size = bucket_size(n)
        assert n <= size and (size - n) / size < 0.2, n
    assert len({bucket_size(n) for n in range(257, 4097)}) == 16
    assert bucket_size(3, minimum=1) == 3 and bucket_size(5, minimum=1) == 6


def test_key_groups_by_hand():
    img, vid, pad = 9, 8, 0
    ids = np.array([[pad, pad, 5, 6, img, img, 7, vid, 4],
                    [5, 6, 7, 4, 4, 5, 6, 7, 3]])
    mask = ids != pad
    g = key_groups(ids, mask, img, vid)
    np.testing.assert_array_equal(g[0, :, 0], [0, 0, 0, 0, 1, 1, 0, 1, 0])  # visual
    np.testing.assert_array_equal(g[0, :, 1], [0, 0, 1, 1, 0, 0, 1, 0, 1])  # other prompt text
    np.testing.assert_array_equal(g[0, :, 2], [0, 0, 1, 1, 0, 0, 0, 0, 0])  # text before the image
    np.testing.assert_array_equal(g[1], np.stack([np.zeros(9), np.ones(9), np.ones(9)], 1))


def test_prefill_chunk_is_the_largest_divisor_up_to_the_limit():
    from mmjax.models.sampler import chunk_length
    assert chunk_length(320, 512) == 320  # up to the limit: one piece
    assert chunk_length(320, 256) == 160  # the gcd rule gave 64
    assert chunk_length(640, 512) == 320
    assert chunk_length(4096, 512) == 512
    assert chunk_length(1280, 512) == 320
    assert chunk_length(96, 64) == 48
