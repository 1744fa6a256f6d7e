"""The KV-cache path (prefill + one-token decode steps) reproduces full-sequence logits."""

import jax
import numpy as np
import pytest
import torch

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.kv_cache import init_cache
from oracle import EOS, IMAGE, build_hf_model, pad_batch, pixels, sample_ids

EXTRA = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kv"))
    return build_hf_model(path, seed=7, kv_heads=2, window=56), qwen.load_hf(path, progress=False)


class CachedDecoder:
    """Prefill a prompt into a fixed-size cache, then feed one token at a time."""

    def __init__(self, model, prompt, max_new: int):
        mod, params = model.module, model.params
        self._embed = jax.jit(lambda ids: mod.apply({"params": params}, ids, method=mod.embed))
        self._decode = jax.jit(lambda e, p, kv, c, i: mod.apply(
            {"params": params}, e, p, kv, c, i, method=mod.decode))
        self._logits = jax.jit(lambda h: mod.apply({"params": params}, h, method=mod.logits))
        x = model.prepare(**prompt)
        b, self.t = x["input_ids"].shape
        image = mod.apply({"params": params}, x["image"], method=mod.encode_vision)
        embeds = mod.apply({"params": params}, x["input_ids"], image, method=mod.embed)
        self.key_valid = np.zeros((b, self.t + max_new), bool)
        self.key_valid[:, :self.t] = x["attention_mask"]
        cache = init_cache(model.config.text, b, self.t + max_new)
        hidden, self.cache, _ = self._decode(embeds, x["positions"], self.key_valid, cache, 0)
        self.prompt_logits = np.asarray(self._logits(hidden))
        self.next_pos = x["attention_mask"].sum(1) + x["rope_deltas"][:, 0]
        self.i = 0

    def step(self, token: np.ndarray) -> np.ndarray:
        """Logits [B, V] after feeding token [B]."""
        b = token.shape[0]
        self.key_valid[:, self.t + self.i] = True
        pos = np.broadcast_to((self.next_pos + self.i)[None, :, None], (3, b, 1))
        hidden, self.cache, _ = self._decode(self._embed(token[:, None]), pos, self.key_valid, self.cache,
                                             self.t + self.i)
        self.i += 1
        return np.asarray(self._logits(hidden))[:, 0]


def test_prefill_plus_cached_decode_equals_full_forward(pair):
    _, model = pair
    rng = np.random.default_rng(0)
    per_sample = [[(1, 4, 6)], [(1, 6, 6), (1, 4, 4)]]
    ids, mask = pad_batch([sample_ids(rng, [4 + i] + [3] * len(g), g) for i, g in enumerate(per_sample)])
    grids = np.array([g for gs in per_sample for g in gs])
    pv = pixels(rng, grids)
    new = rng.integers(3, 240, (2, EXTRA))
    dec = CachedDecoder(model, dict(input_ids=ids, attention_mask=mask, pixel_values=pv,
                                    image_grid_thw=grids), EXTRA)
    steps = [dec.step(new[:, i]) for i in range(EXTRA)]
    # Cached logits at the prompt positions and after each fed token = one forward over all.
    full_ids = np.concatenate([ids, new], 1)
    full_mask = np.concatenate([mask, np.ones_like(new)], 1)
    full = model.logits(full_ids, full_mask, pv, grids)
    cached = np.concatenate([dec.prompt_logits, np.stack(steps, 1)], 1)[:, :full.shape[1]]
    valid = full_mask.astype(bool)
    assert np.abs(cached - full)[valid].max() <= 1e-4


def test_greedy_continuation_matches_transformers_generate(pair):
    hf_model, model = pair
    rng = np.random.default_rng(1)
    grids = np.array([(1, 6, 8)])
    ids, mask = pad_batch([sample_ids(rng, [5, 6], grids.tolist())])
    pv = pixels(rng, grids)
    steps = 16
    dec = CachedDecoder(model, dict(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=grids),
                        steps)
    no_eos = lambda logits: np.where(np.arange(logits.shape[-1]) == EOS, -np.inf, logits)  # min_new_tokens
    tokens = [no_eos(dec.prompt_logits[:, -1]).argmax(-1)]
    for _ in range(steps - 1):
        tokens.append(no_eos(dec.step(tokens[-1])).argmax(-1))
    tokens = np.stack(tokens, 1)
    tt = torch.from_numpy((ids == IMAGE).astype(np.int64))
    with torch.no_grad():
        ref = hf_model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                pixel_values=torch.from_numpy(pv), image_grid_thw=torch.from_numpy(grids),
                                mm_token_type_ids=tt, max_new_tokens=steps, min_new_tokens=steps,
                                do_sample=False)
    np.testing.assert_array_equal(tokens[0], ref[0, ids.shape[1]:].numpy())
