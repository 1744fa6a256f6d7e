"""Completion log-probs and their gradients against transformers + torch autograd (fp32)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.qwen2_5_vl import hf, hf_keys
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from oracle import IMAGE, VIDEO, build_hf_model, pad_batch, pixels, sample_ids

CONFIGS = {
    "gqa_untied": dict(kv_heads=2, tie=False, window=56, fullatt=(1,)),
    "mha_tied": dict(kv_heads=4, tie=True, window=112, fullatt=(0,)),
}
G, TC = 2, 5


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp(request.param))
    hf_model = build_hf_model(path, seed=3, **CONFIGS[request.param])
    return hf_model, qwen.load_hf(path, progress=False)


def _torch_logprobs(hf_model, prompt_ids, prompt_mask, completions, comp_mask, vision):
    """log-probs [N, Tc] from a full forward of prompt + completion per row, with autograd."""
    ids = np.concatenate([np.repeat(prompt_ids, G, 0), completions], axis=1)
    mask = np.concatenate([np.repeat(prompt_mask, G, 0), comp_mask.astype(np.int64)], axis=1)
    types = np.zeros_like(ids)
    types[ids == IMAGE] = 1
    types[ids == VIDEO] = 2
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in vision.items()}
    logits = hf_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                      mm_token_type_ids=torch.from_numpy(types), **kw).logits
    tp = prompt_ids.shape[1]
    lp = torch.log_softmax(logits[:, tp - 1:tp - 1 + TC].float(), dim=-1)
    lp = torch.gather(lp, -1, torch.from_numpy(completions)[..., None])[..., 0]
    return lp * torch.from_numpy(comp_mask.astype(np.float32))


def _repeat_vision(per_prompt, key_pixels, key_grid, extra=None):
    """Vision inputs for the torch oracle: each prompt's images listed G times."""
    pv, grids, secs = [], [], []
    for item in per_prompt:
        for _ in range(G):
            pv.append(item[0])
            grids += item[1]
            secs += item[2] if extra else []
    out = {key_pixels: np.concatenate(pv), key_grid: np.array(grids)}
    if extra:
        out[extra] = np.array(secs, np.float32)
    return out


def _case(kind, rng):
    """(prompt ids, mask, mmjax vision kwargs, torch vision kwargs) for one test case."""
    if kind == "text":
        ids, mask = pad_batch([sample_ids(rng, [9], []), sample_ids(rng, [5], [])])
        return ids, mask, {}, {}
    if kind == "video":
        grids = [[(2, 4, 4)], [(2, 4, 6)]]
        seqs = [sample_ids(rng, [4, 3], g, token=VIDEO) for g in grids]
        ids, mask = pad_batch(seqs)
        pv = [pixels(rng, g) for g in grids]
        secs = [[1.0], [2.0]]
        ours = dict(pixel_values_videos=np.concatenate(pv), video_grid_thw=np.array(sum(grids, [])),
                    second_per_grid_ts=np.array([1.0, 2.0], np.float32))
        theirs = _repeat_vision(list(zip(pv, grids, secs)), "pixel_values_videos", "video_grid_thw",
                                "second_per_grid_ts")
        return ids, mask, ours, theirs
    grids = {"one_image": [[(1, 4, 6)], [(1, 6, 4)]],
             "several_images": [[(1, 4, 4), (1, 6, 8)], [(1, 4, 6)]]}[kind]
    seqs = [sample_ids(rng, [3 + 2 * i] + [2] * len(g), g) for i, g in enumerate(grids)]
    ids, mask = pad_batch(seqs)  # left padding: the prompts differ in length
    pv = [pixels(rng, g) for g in grids]
    ours = dict(pixel_values=np.concatenate(pv), image_grid_thw=np.array(sum(grids, [])))
    theirs = _repeat_vision([(p, g, []) for p, g in zip(pv, grids)], "pixel_values", "image_grid_thw")
    return ids, mask, ours, theirs


def _completions(rng, n):
    comp = rng.integers(3, 240, (n, TC)).astype(np.int64)
    comp_mask = np.ones((n, TC), bool)
    comp_mask[1, 3:] = False  # a completion that stopped early
    comp[1, 3:] = 2
    return comp, comp_mask


@functools.lru_cache(maxsize=None)
def _grad_fn(module):
    def loss(params, batch, comp, comp_mask):
        lp, _ = completion_logprobs(module, params, batch, comp, comp_mask, num_generations=G)
        return lp.sum(), lp
    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("kind", ["one_image", "several_images", "video", "text"])
def test_logprobs_and_gradients_equal_torch_autograd(pair, kind):
    hf_model, model = pair
    rng = np.random.default_rng(len(kind))
    ids, mask, ours, theirs = _case(kind, rng)
    comp, comp_mask = _completions(rng, ids.shape[0] * G)
    batch = model.prepare(ids, mask, **ours)
    (_, lp), grads = _grad_fn(model.module)(model.params, batch, jnp.asarray(comp, jnp.int32),
                                            jnp.asarray(comp_mask))
    hf_model.zero_grad()
    ref = _torch_logprobs(hf_model, ids, mask, comp, comp_mask, theirs)
    ref.sum().backward()
    np.testing.assert_allclose(np.asarray(lp), ref.detach().numpy(), atol=1e-5)
    assert (np.asarray(lp)[comp_mask] < -1).all()  # real log-probs, not zeros

    torch_grads = {k: p.grad.numpy() for k, p in hf_model.named_parameters() if p.grad is not None}
    ours_hf = dict(hf.iter_params_as_hf(jax.tree.map(np.asarray, grads), model.config, hf_keys.MODULE_LAYOUT))
    needs_vision = kind != "text"
    checked = 0
    for key, ref_grad in torch_grads.items():
        got = ours_hf[key]
        scale = np.abs(ref_grad).max()
        np.testing.assert_allclose(got, ref_grad, rtol=1e-4, atol=1e-4 * scale + 1e-9, err_msg=key)
        checked += key.startswith("model.visual.")
    assert (checked > 0) == needs_vision  # the vision tower gets its gradients


def test_logprobs_equal_the_samplers(pair):
    """The learner scores a rollout from what the Rollout carries (bucketed prompt arrays and
    completion positions), deriving nothing again, and gets the sampler's log-probs."""
    _, model = pair
    rng = np.random.default_rng(7)
    ids, mask, ours, _ = _case("one_image", rng)
    out = model.generate(ids, mask, **ours, max_new_tokens=TC, temperature=1.0, num_generations=G, seed=3)
    batch = out.prompt_batch(model.prepare(ids, mask, **ours))
    assert batch["input_ids"].shape[1] >= ids.shape[1]  # the sampler's bucketed prompt length
    assert out.completion_positions.shape == (3, ids.shape[0] * G, TC)
    lp, ent = jax.jit(functools.partial(completion_logprobs, model.module, num_generations=G,
                                        with_entropy=True, chunk_rows=3))(
        model.params, batch, jnp.asarray(out.tokens), jnp.asarray(out.mask),
        positions=jnp.asarray(out.completion_positions))
    np.testing.assert_allclose(np.asarray(lp), out.logprobs, atol=1e-5)
    ent = np.asarray(ent)
    assert (ent[out.mask] > 0).all() and (ent[out.mask] <= np.log(model.config.text.vocab_size) + 1e-4).all()


def test_the_prompt_cache_is_never_copied_per_completion(pair):
    """The G completions read their prompt's KV cache as a shared prefix: no [B * G, Hkv, slots,
    head_dim] copy of it exists in the compiled forward + backward (the old repeat-the-cache
    path held two per layer)."""
    _, model = pair
    rng = np.random.default_rng(5)
    ids, mask, ours, _ = _case("one_image", rng)
    comp, comp_mask = _completions(rng, ids.shape[0] * G)
    batch = model.prepare(ids, mask, **ours)
    hlo = _grad_fn(model.module).lower(model.params, batch, jnp.asarray(comp, jnp.int32),
                                       jnp.asarray(comp_mask)).compile().as_text()
    text = model.config.text
    n, tp = ids.shape[0] * G, batch["input_ids"].shape[1]
    per_prompt = f"f32[{ids.shape[0]},{text.num_key_value_heads},{tp},{text.head_dim}]"
    assert per_prompt in hlo  # the prompt's own cache, to make sure the shapes are read right
    for slots in (tp, tp + TC):
        assert f"f32[{n},{text.num_key_value_heads},{slots},{text.head_dim}]" not in hlo
