"""LoRA (issue 25, mmjax.models.lora via qwix) against transformers + peft: a new adapter changes
nothing, the merged params are the adapted model, the adapters' gradients equal torch autograd through
peft, and the PEFT export loads with peft onto the transformers model with the same logits."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch

import mmjax.models.qwen2_5_vl as qwen
import test_completion_logprobs as oracle_logprobs
from mmjax.models import lora
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from oracle import build_hf_model, hf_logits

SPEC = lora.LoraSpec(rank=4, alpha=8.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf"))
    return build_hf_model(path, seed=5), qwen.load_hf(path, progress=False)


def _random_adapters(model, seed=1):
    """Adapters with B != 0 too (a new adapter's B is 0: its gradient w.r.t. A would be 0)."""
    fresh = lora.init_adapters(model.module, SPEC, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(fresh)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _peft_model(hf_model, adapters):
    peft = pytest.importorskip("peft")
    config = lora.peft_config(adapters, SPEC)
    peft_config = peft.LoraConfig(r=config["r"], lora_alpha=config["lora_alpha"], lora_dropout=0.0,
                                  target_modules=config["target_modules"])
    model = peft.get_peft_model(hf_model, peft_config)
    result = peft.set_peft_model_state_dict(
        model, {k: torch.from_numpy(v) for k, v in lora.peft_tensors(adapters).items()})
    assert not result.unexpected_keys, result.unexpected_keys
    return model


def test_a_new_adapter_changes_nothing_and_merging_gives_the_adapted_model(pair):
    _, model = pair
    rng = np.random.default_rng(0)
    ids, mask, ours, _ = oracle_logprobs._case("one_image", rng)
    wrapped = lora.wrap(model.module, SPEC)
    fresh = lora.init_adapters(model.module, SPEC, jax.random.key(0))
    assert len(jax.tree.leaves(fresh)) == 2 * 7 * 2  # 2 layers x 7 projections x (A, B)
    base_logits = model.logits(ids, mask, **ours)
    as_lora = model.replace(params=lora.combined(model.params, fresh))
    as_lora.module = wrapped
    np.testing.assert_array_equal(as_lora.logits(ids, mask, **ours), base_logits)  # B = 0: exactly the base

    adapters = _random_adapters(model)
    as_lora = model.replace(params=lora.combined(model.params, adapters))
    as_lora.module = wrapped
    adapted = as_lora.logits(ids, mask, **ours)
    merged = model.replace(params=lora.merged(model.params, adapters, SPEC)).logits(ids, mask, **ours)
    assert np.abs(adapted - base_logits).max() > 0.1  # the adapters matter
    np.testing.assert_allclose(merged, adapted, atol=1e-4)
    assert lora.base(lora.combined(model.params, adapters)).keys() == model.params.keys()
    assert jax.tree.structure(lora.adapters(lora.combined(model.params, adapters))) == jax.tree.structure(adapters)


def test_adapter_gradients_equal_peft_autograd(pair):
    hf_model, model = pair
    rng = np.random.default_rng(1)
    ids, mask, ours, theirs = oracle_logprobs._case("several_images", rng)
    comp, comp_mask = oracle_logprobs._completions(rng, ids.shape[0] * oracle_logprobs.G)
    adapters = _random_adapters(model, seed=3)
    wrapped = lora.wrap(model.module, SPEC)
    batch = model.prepare(ids, mask, **ours)

    def loss(adapter_params):
        lp, _ = completion_logprobs(wrapped, lora.combined(model.params, adapter_params), batch,
                                    jnp.asarray(comp, jnp.int32), jnp.asarray(comp_mask),
                                    num_generations=oracle_logprobs.G)
        return lp.sum(), lp

    (_, lp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(adapters)
    peft_model = _peft_model(hf_model, adapters)
    try:
        ref = oracle_logprobs._torch_logprobs(peft_model, ids, mask, comp, comp_mask, theirs)
        ref.sum().backward()
        np.testing.assert_allclose(np.asarray(lp), ref.detach().numpy(), atol=1e-5)
        ours_peft = lora.peft_tensors(grads)
        checked = 0
        for name, p in peft_model.named_parameters():
            if "lora_" not in name:
                continue
            key = name.replace(".default.weight", ".weight")
            ref_grad = p.grad.numpy()
            scale = np.abs(ref_grad).max()
            assert scale > 0, key
            np.testing.assert_allclose(ours_peft[key], ref_grad, rtol=1e-4, atol=1e-4 * scale, err_msg=key)
            checked += 1
        assert checked == 28
    finally:
        peft_model.unload()  # the module-scoped HF model without adapters again


def test_peft_export_loads_onto_transformers_with_the_same_logits(pair, tmp_path):
    peft = pytest.importorskip("peft")
    hf_model, model = pair
    adapters = _random_adapters(model, seed=7)
    safetensors.numpy.save_file(lora.peft_tensors(adapters), str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(lora.peft_config(adapters, SPEC)))
    loaded = peft.PeftModel.from_pretrained(hf_model, str(tmp_path))
    try:
        rng = np.random.default_rng(2)
        ids, mask, ours, _ = oracle_logprobs._case("one_image", rng)
        as_lora = model.replace(params=lora.combined(model.params, adapters))
        as_lora.module = lora.wrap(model.module, SPEC)
        ref = hf_logits(loaded, ids, mask, ours["pixel_values"], ours["image_grid_thw"])
        real = mask.astype(bool)  # left padding: mmjax writes 0 there
        np.testing.assert_allclose(as_lora.logits(ids, mask, **ours)[real], ref[real], atol=1e-4)
    finally:
        loaded.unload()
