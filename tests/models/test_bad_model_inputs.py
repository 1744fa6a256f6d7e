"""Bad model inputs, config.json fields and checkpoint tensors are refused with errors that name them.

Each case used to be accepted silently (NaN logits, a wrapped id, a cast) or to fail deep inside
with an unrelated error.
"""

import copy
import dataclasses
import json

import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

import mmjax.models.qwen2_5_vl as qwen
from mmjax.models.qwen2_5_vl import hf
from mmjax.models.qwen2_5_vl.config import TextConfig, VisionConfig

TINY = qwen.preset("tiny")
V = TINY.text.vocab_size  # 1024
IMAGE, VIDEO, VSTART, VEND = (TINY.image_token_id, TINY.video_token_id, TINY.vision_start_token_id,
                              TINY.vision_end_token_id)
PATCH_DIM = TINY.vision.patch_dim


@pytest.fixture(scope="module")
def no_params():
    """prepare() needs no params: checks only, nothing is run."""
    return qwen.Qwen2_5_VL(TINY, params=None)


@pytest.fixture(scope="module")
def model():
    return qwen.Qwen2_5_VL.from_config(TINY, seed=0)


def image_prompt(n_tokens=4, token=IMAGE):
    return np.array([[5, VSTART] + [token] * n_tokens + [VEND, 6]], np.int64)


# ---- 1. token ids outside the vocabulary --------------------------------------------------

@pytest.mark.parametrize("bad,dtype", [(V, np.int64), (V + 5000, np.int32), (-1, np.int64),
                                       (2**32 + 6, np.int64), (2**16 + 6, np.uint64)])
def test_out_of_vocabulary_id_names_row_position_and_id(no_params, bad, dtype):
    ids = np.array([[3, 4, 5, 6], [7, 8, 9, 10]], dtype)
    ids[1, 2] = bad  # 2**32 + 6 would be 6 after astype(int32); -1 would be V - 1 to a gather
    with pytest.raises(ValueError, match=rf"input_ids row 1, position 2: id {bad} .*vocab_size={V}"):
        no_params.prepare(ids, None)


def test_padding_positions_are_checked_too(no_params):
    """A padded slot still goes through the embedding gather, so a bad id there is refused too."""
    ids, mask = np.array([[V, 4, 5]]), np.array([[0, 1, 1]])
    with pytest.raises(ValueError, match="row 0, position 0: id 1024"):
        no_params.prepare(ids, mask)


def test_generate_refuses_out_of_vocabulary_prompt(model):
    # Before: the row's logits were all NaN and generate returned pad tokens with NaN log-probs.
    with pytest.raises(ValueError, match=rf"row 0, position 1: id {V} .*vocab_size={V}"):
        model.generate(np.array([[3, V, 5]]), None, max_new_tokens=2)


@pytest.mark.parametrize("kw,message", [
    (dict(eos_token_ids=[TINY.text.eos_token_id, V]), rf"eos_token_ids: id {V} .*vocab_size={V}"),
    (dict(eos_token_ids=-1), rf"eos_token_ids: id -1 .*vocab_size={V}"),
    (dict(eos_token_ids=[1.5]), r"eos_token_ids: 1\.5 .*not an integer"),
    (dict(pad_token_id=V + 3), rf"pad_token_id: id {V + 3} .*vocab_size={V}"),
    (dict(pad_token_id=-2), rf"pad_token_id: id -2 .*vocab_size={V}"),
    (dict(pad_token_id=7.0), r"pad_token_id: 7\.0 .*not an integer"),
])
def test_generate_refuses_eos_and_pad_outside_the_vocabulary(model, kw, message):
    with pytest.raises(ValueError, match=message):
        model.generate(np.array([[3, 4, 5]]), None, max_new_tokens=2, **kw)


def test_generate_names_the_config_when_its_eos_is_outside_the_vocabulary(model):
    bad = qwen.Qwen2_5_VL(TINY.replace(text=dataclasses.replace(TINY.text, eos_token_id=(5, 2000))),
                          model.params)
    with pytest.raises(ValueError, match=r"eos_token_ids: id 2000 .*config's text_config\.eos_token_id"):
        bad.generate(np.array([[3, 4, 5]]), None, max_new_tokens=2)


# ---- 2. grids ------------------------------------------------------------------------------

@pytest.mark.parametrize("grid,message", [
    # 16 patches -> 4 tokens: passed the placeholder count, then failed deep in M-RoPE
    ([[1, -4, -4]], r"image_grid_thw row 0 = \[1, -4, -4\]: t, h and w must all be > 0"),
    ([[-1, 4, 4]], r"image_grid_thw row 0 = \[-1, 4, 4\]: t, h and w must all be > 0"),
    ([1, 4, 4], r"image_grid_thw must have shape \[num, 3\].*got shape \(3,\)"),  # was numpy AxisError
    ([[1, 4, 4, 1]], r"image_grid_thw must have shape \[num, 3\].*got shape \(1, 4\)"),
    ([[1.0, 4.0, 4.0]], r"image_grid_thw must be an integer array.*dtype float64"),
    ([[2, 2, 3]], r"image_grid_thw row 0 = \[2, 2, 3\]: h and w must be multiples of spatial_merge_size=2"),
])
def test_bad_image_grid_names_the_field_row_and_values(no_params, grid, message):
    with pytest.raises(ValueError, match=message):
        no_params.prepare(image_prompt(), None, np.zeros((16, PATCH_DIM), np.float32), np.array(grid))


def test_bad_video_grid_names_its_field_and_row(no_params):
    grid = np.array([[1, 4, 4], [2, -2, -4]])  # row 1: 16 patches, 4 tokens
    ids = np.array([[5, VSTART] + [VIDEO] * 4 + [VEND, VSTART] + [VIDEO] * 4 + [VEND]])
    with pytest.raises(ValueError, match=r"video_grid_thw row 1 = \[2, -2, -4\]"):
        no_params.prepare(ids, None, pixel_values_videos=np.zeros((32, PATCH_DIM), np.float32), video_grid_thw=grid)


@pytest.mark.parametrize("seconds", [[1.0, 0.5], [], [[1.0]]])
def test_second_per_grid_ts_needs_one_value_per_video(no_params, seconds):
    ids = np.array([[5, VSTART] + [VIDEO] * 4 + [VEND]])
    with pytest.raises(ValueError, match=r"second_per_grid_ts has shape .* holds 1 videos"):
        no_params.prepare(ids, None, pixel_values_videos=np.zeros((16, PATCH_DIM), np.float32),
                       video_grid_thw=np.array([[1, 4, 4]]), second_per_grid_ts=np.array(seconds))


def test_second_per_grid_ts_without_videos_is_refused(no_params):
    with pytest.raises(ValueError, match=r"second_per_grid_ts has shape \(1,\) but video_grid_thw holds 0"):
        no_params.prepare(np.array([[3, 4]]), None, second_per_grid_ts=np.array([1.0]))


def test_good_inputs_still_prepare(no_params):
    x = no_params.prepare(image_prompt(), None, np.zeros((16, PATCH_DIM), np.uint8), np.array([[1, 4, 4]]))
    assert x["input_ids"].dtype == np.int32 and x["positions"].shape == (3, 1, 8)
    ids = np.array([[5, VSTART] + [VIDEO] * 4 + [VEND]], np.uint16)  # unsigned ids: deltas stay signed
    x = no_params.prepare(ids, np.ones(ids.shape, bool), pixel_values_videos=np.zeros((16, PATCH_DIM), np.float32),
                       video_grid_thw=np.array([[1, 4, 4]]), second_per_grid_ts=np.float32([0.5]))
    assert x["rope_deltas"].dtype == np.int32 and x["rope_deltas"][0, 0] == -2


# ---- 3. dtypes -----------------------------------------------------------------------------

@pytest.mark.parametrize("pixels", [
    np.zeros((16, PATCH_DIM), bool),
    np.zeros((16, PATCH_DIM), np.complex64),
    np.full((16, PATCH_DIM), "0.5"),
    np.zeros((16, PATCH_DIM), object),
], ids=["bool", "complex", "str", "object"])
def test_pixel_values_of_a_non_real_dtype_are_refused(no_params, pixels):
    with pytest.raises(ValueError, match=rf"pixel_values must be a real floating or integer array, got dtype "
                                         rf"{pixels.dtype}"):
        no_params.prepare(image_prompt(), None, pixels, np.array([[1, 4, 4]]))
    with pytest.raises(ValueError, match="pixel_values_videos must be a real"):
        no_params.prepare(image_prompt(token=VIDEO), None, pixel_values_videos=pixels, video_grid_thw=np.array([[1, 4, 4]]))


@pytest.mark.parametrize("ids", [[[3, 6.7]], [[3.0, 6.0]]], ids=["fractional", "whole"])
def test_float_input_ids_are_refused(no_params, ids):
    # 6.7 used to become 6; whole-valued floats are refused too, and the message says why.
    with pytest.raises(ValueError, match=r"input_ids must be an integer array, got dtype float64.*whole numbers"):
        no_params.prepare(np.array(ids), None)


@pytest.mark.parametrize("mask,message", [
    (np.array([[1.0, 1.0]]), r"attention_mask must be an integer or bool array, got dtype float64"),
    (np.array([[1, 2]]), r"attention_mask must hold only 0 and 1"),
])
def test_bad_attention_mask(no_params, mask, message):
    with pytest.raises(ValueError, match=message):
        no_params.prepare(np.array([[3, 4]]), mask)


# ---- 4. config.json and the index with wrong JSON types --------------------------------------

def _set(path, value):
    def mutate(d):
        *parents, key = path
        for p in parents:
            d = d[p]
        d[key] = value
    return mutate


@pytest.mark.parametrize("mutate,message", [
    (lambda d: [d], r"config\.json: must hold a JSON object, got list"),
    (_set(["vision_config"], [1]), r"config\.json: vision_config must be an object or null, got list \[1\]"),
    (_set(["text_config"], "x"), r"config\.json: text_config must be an object or null, got str 'x'"),
    (_set(["text_config", "hidden_size"], "64"), r"config\.json: text_config\.hidden_size must be an int, got str '64'"),
    (_set(["text_config", "num_hidden_layers"], True), r"text_config\.num_hidden_layers must be an int, got bool True"),
    (_set(["text_config", "hidden_size"], 64.5), r"text_config\.hidden_size must be an int, got float 64\.5"),
    (_set(["text_config", "intermediate_size"], 128.0), r"text_config\.intermediate_size must be an int, got float"),
    (_set(["text_config", "rms_norm_eps"], "1e-6"), r"text_config\.rms_norm_eps must be a finite number, got str"),
    (_set(["text_config", "eos_token_id"], [1, "2"]), r"text_config\.eos_token_id must be an int or a list of ints"),
    (_set(["text_config", "rope_parameters"], [2, 3, 3]), r"text_config\.rope_parameters must be an object"),
    (_set(["text_config", "rope_parameters", "mrope_section"], [2, 6]),
     r"text_config\.rope_parameters\.mrope_section must be a list of 3 ints"),
    (_set(["vision_config", "depth"], None), r"vision_config\.depth must be an int, got NoneType None"),
    (_set(["vision_config", "fullatt_block_indexes"], 1), r"vision_config\.fullatt_block_indexes must be a list of ints"),
    (_set(["vision_config", "rope_parameters"], {"rope_theta": "1e4"}),
     r"vision_config\.rope_parameters\.rope_theta must be a finite number"),
    (_set(["tie_word_embeddings"], "false"), r"config\.json: tie_word_embeddings must be a bool"),
    (_set(["image_token_id"], "1020"), r"config\.json: image_token_id must be an int, got str"),
    (_set(["architectures"], "Qwen2_5_VLForConditionalGeneration"), r"architectures must be a list of strings"),
    (_set(["text_config", "num_attention_heads"], 0), r"text_config\.num_attention_heads=0 must be > 0"),
])
def test_config_json_with_wrong_types_names_file_and_field(tmp_path, mutate, message):
    d = TINY.to_hf_dict()
    d = mutate(d) or d
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(qwen.ConfigError, match=message) as e:
        qwen.Qwen25VLConfig.from_pretrained(str(tmp_path))
    assert str(tmp_path / "config.json") in str(e.value)


def test_4x_layout_errors_name_the_top_level_field(tmp_path):
    d = TINY.to_hf_dict()
    flat = {**{k: v for k, v in d.items() if k != "text_config"}, **d["text_config"], "hidden_size": "64",
            "model_type": "qwen2_5_vl"}
    with pytest.raises(qwen.ConfigError, match=r"config\.json: hidden_size must be an int, got str '64'"):
        qwen.Qwen25VLConfig.from_hf_dict(flat)


@pytest.mark.parametrize("index,message", [
    ({"weight_map": 5}, r"weight_map must be an object of tensor name -> shard file name, got int 5"),
    ({"weight_map": {"lm_head.weight": 3}}, r"weight_map\['lm_head\.weight'\] must be a shard file name.*got int 3"),
    ({"weight_map": {"lm_head.weight": None}}, r"weight_map\['lm_head\.weight'\] must be a shard file name"),
    ([{"weight_map": {}}], r"must hold a JSON object, got list"),
    ({"metadata": {}}, r"field weight_map is missing"),
])
def test_index_with_a_bad_weight_map_names_the_file_and_field(tmp_path, index, message):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(qwen.CheckpointError, match=message) as e:
        hf.safetensors_files(str(tmp_path))
    assert "model.safetensors.index.json" in str(e.value)


# ---- 5. integer tensors in the checkpoint -----------------------------------------------------

def _write_checkpoint(path, cfg, dtype_of=None):
    """An all-zero HF checkpoint of cfg (no init, no compute); dtype_of: {hf key: dtype} overrides."""
    zeros = traverse_util.unflatten_dict({p: np.zeros(s, np.float32) for p, s in hf.expected_shapes(cfg).items()})
    tensors = {k: a.astype((dtype_of or {}).get(k, a.dtype)) for k, a in hf.iter_params_as_hf(zeros, cfg)}
    save_file(tensors, str(path / "model.safetensors"))
    cfg.save(str(path))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_tensor_in_the_checkpoint_is_refused(tmp_path, dtype):
    key = "model.layers.1.mlp.up_proj.weight"
    _write_checkpoint(tmp_path, TINY, {key: dtype})
    with pytest.raises(qwen.CheckpointError, match=rf"model\.safetensors: tensor '{key}' has dtype "
                                                 rf"{np.dtype(dtype)}.*floating point"):
        hf.load_params(str(tmp_path), TINY, progress=False)


def test_float_checkpoint_loads(tmp_path):
    import ml_dtypes
    _write_checkpoint(tmp_path, TINY, {"model.norm.weight": ml_dtypes.bfloat16})
    params, _ = hf.load_params(str(tmp_path), TINY, progress=False)
    assert params["language_model"]["norm"]["scale"].dtype == ml_dtypes.bfloat16


# ---- defaults of fields missing from config.json: transformers' ---------------------------------

def test_dataclass_defaults_are_transformers_defaults():
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (Qwen2_5_VLTextConfig,
                                                                         Qwen2_5_VLVisionConfig)
    ref_v, ref_t = Qwen2_5_VLVisionConfig(), Qwen2_5_VLTextConfig()
    ours_v, ours_t = VisionConfig(), TextConfig()
    for f in dataclasses.fields(VisionConfig):
        if f.name != "rope_theta":
            ref = getattr(ref_v, f.name)
            assert getattr(ours_v, f.name) == (tuple(ref) if isinstance(ref, list) else ref), f.name
    for name in ("hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id", "eos_token_id",
                 "pad_token_id"):
        assert getattr(ours_t, name) == getattr(ref_t, name), name


def test_presets_keep_the_published_values():
    for name in ("3b", "7b", "32b"):
        cfg = qwen.preset(name)
        assert (cfg.text.max_position_embeddings, cfg.text.rms_norm_eps) == (128000, 1e-6)
        assert (cfg.vision.hidden_size, cfg.vision.tokens_per_second) == (1280, 2)
    assert qwen.preset("tiny").vision.tokens_per_second == 2


MINIMAL_TEXT = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 256, "num_hidden_layers": 2,
                "num_attention_heads": 32}  # 32 heads: the absent num_key_value_heads is 8


@pytest.mark.parametrize("layout", ["5.x", "4.x"])
def test_missing_fields_read_as_transformers_reads_them(tmp_path, layout):
    from transformers import Qwen2_5_VLConfig
    base = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl"}
    if layout == "5.x":
        d = {**base, "vision_config": {},
             "text_config": {**MINIMAL_TEXT, "rope_parameters": {"rope_type": "default", "mrope_section": [16, 20, 20]}}}
    else:  # text fields at the top, rope_scaling, no vision_config at all
        d = {**base, **MINIMAL_TEXT, "rope_scaling": {"type": "mrope", "mrope_section": [16, 20, 20]}}
    (tmp_path / "config.json").write_text(json.dumps(d))
    ours = qwen.Qwen25VLConfig.from_pretrained(str(tmp_path))
    ref = Qwen2_5_VLConfig.from_pretrained(str(tmp_path))
    t, v = ref.text_config, ref.vision_config
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
                 "eos_token_id", "pad_token_id"):
        assert getattr(ours.text, name) == getattr(t, name), name
    assert ours.text.rope_theta == t.rope_parameters["rope_theta"]
    assert list(ours.text.mrope_section) == list(t.rope_parameters["mrope_section"])
    for f in dataclasses.fields(VisionConfig):
        ref_value = v.rope_parameters["rope_theta"] if f.name == "rope_theta" else getattr(v, f.name)
        ref_value = tuple(ref_value) if isinstance(ref_value, list) else ref_value
        assert getattr(ours.vision, f.name) == ref_value, f.name
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                 "tie_word_embeddings"):
        assert getattr(ours, name) == getattr(ref, name), name


def test_tie_in_text_config_ties_as_in_transformers(tmp_path):
    from transformers import Qwen2_5_VLConfig
    d = copy.deepcopy(TINY.to_hf_dict())
    d["tie_word_embeddings"] = False
    d["text_config"]["tie_word_embeddings"] = True  # a pre-v5 save
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert Qwen2_5_VLConfig.from_pretrained(str(tmp_path)).tie_word_embeddings is True
    assert qwen.Qwen25VLConfig.from_pretrained(str(tmp_path)).tie_word_embeddings is True
