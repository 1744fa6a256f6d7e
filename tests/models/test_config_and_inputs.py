"""Config reading/writing, presets against transformers' shapes, and bad-input errors."""

import json

import numpy as np
import pytest
import torch
from flax import traverse_util

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.qwen2_5_vl import hf_keys
from mmjax.models.qwen2_5_vl.params import abstract_params
from oracle import build_hf_model, pad_batch, pixels, sample_ids


@pytest.mark.parametrize("name", ["3b", "7b", "32b", "bench"])
def test_presets_have_transformers_shapes(name):
    """Every tensor transformers creates for the preset maps onto an mmjax leaf of the same shape."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    cfg = qwen.preset(name)
    with torch.device("meta"):
        ref = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg.to_hf_dict()))
    ref_shapes = {}
    for key, p in ref.state_dict().items():
        key = key.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        if cfg.tie_word_embeddings and key == "lm_head.weight":
            continue
        path, kind = hf_keys.hf_key_to_path(key, hf_keys.HUB_LAYOUT)
        ref_shapes[path] = hf_keys.mmjax_shape(kind, tuple(p.shape), cfg)
    ours = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract_params(cfg)).items()}
    assert ours == ref_shapes
    if name == "7b":  # the published parameter count of Qwen2.5-VL-7B-Instruct
        assert sum(np.prod(s) for s in ours.values()) == 8_292_166_656


def test_hf_config_round_trip_and_4x_layout(tmp_path):
    cfg = qwen.preset("7b")
    assert qwen.Qwen25VLConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    # transformers 4.x layout: text fields at the top, rope_scaling with type "mrope".
    d = cfg.to_hf_dict()
    old = {**{k: v for k, v in d.items() if k != "text_config"}, **d["text_config"]}
    del old["rope_parameters"]
    old["rope_scaling"] = {"type": "mrope", "mrope_section": [16, 24, 24]}
    old["rope_theta"] = 1000000.0
    old["model_type"] = "qwen2_5_vl"
    assert qwen.Qwen25VLConfig.from_hf_dict(old) == cfg


@pytest.mark.parametrize("field,value,message", [
    ("architectures", ["LlavaForConditionalGeneration"], "architectures"),
    ("use_sliding_window", True, "use_sliding_window"),
    ("hidden_act", "relu", "hidden_act"),
])
def test_unsupported_config_fields_name_the_field(tmp_path, field, value, message):
    d = qwen.preset("tiny").to_hf_dict()
    (d if field == "architectures" else d["text_config"])[field] = value
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(qwen.ConfigError, match=message) as e:
        qwen.Qwen25VLConfig.from_pretrained(str(tmp_path))
    assert "config.json" in str(e.value)


def test_missing_config_field_is_named(tmp_path):
    d = qwen.preset("tiny").to_hf_dict()
    del d["text_config"]["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(qwen.ConfigError, match="hidden_size"):
        qwen.Qwen25VLConfig.from_pretrained(str(tmp_path))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bad"))
    build_hf_model(path)
    return qwen.load_hf(path, progress=False)


def test_grid_that_does_not_match_the_image_tokens(model):
    rng = np.random.default_rng(0)
    ids, mask = pad_batch([sample_ids(rng, [3, 3], [(1, 4, 4)])])
    with pytest.raises(ValueError, match=r"4 image placeholder tokens.*grids \[\[1, 4, 6\]\] have 6 merged patches"):
        model.logits(ids, mask, pixels(rng, [(1, 4, 6)]), np.array([(1, 4, 6)]))


def test_pixel_array_of_the_wrong_shape(model):
    rng = np.random.default_rng(0)
    ids, mask = pad_batch([sample_ids(rng, [3, 3], [(1, 4, 4)])])
    with pytest.raises(ValueError, match=r"pixel_values has shape \(16, 100\).*needs \[16, 1176\]"):
        model.logits(ids, mask, np.zeros((16, 100), np.float32), np.array([(1, 4, 4)]))
    with pytest.raises(ValueError, match="together"):
        model.logits(ids, mask, pixels(rng, [(1, 4, 4)]), None)
