"""The rule table: heads as an axis, errors for axes that do not divide, activation and batch helpers."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util
from jax.sharding import AbstractMesh, AxisType, PartitionSpec as P

from mmjax import sharding
from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset
from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
from oracle import pad_batch, pixels, sample_ids


def abstract_mesh(data=1, fsdp=1, tensor=1):
    """Mesh shapes beyond this process's one device: the rules only read the axis sizes."""
    return AbstractMesh((data, fsdp, tensor), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def test_attention_heads_are_an_axis_of_their_own():
    cfg = preset("3b")
    shapes = traverse_util.flatten_dict(abstract_params(cfg))
    axes = traverse_util.flatten_dict(logical_axes(cfg))
    attn = ("language_model", "layers_0", "self_attn")
    assert shapes[(*attn, "q_proj", "kernel")].shape == (2048, 16, 128)
    assert shapes[(*attn, "k_proj", "bias")].shape == (2, 128)
    assert shapes[(*attn, "o_proj", "kernel")].shape == (16, 128, 2048)
    assert axes[(*attn, "q_proj", "kernel")] == P("embed", "q_heads", "head_dim")
    assert axes[(*attn, "v_proj", "kernel")] == P("embed", "kv_heads", "head_dim")
    assert axes[(*attn, "q_proj", "bias")] == P("q_heads", "head_dim")
    assert axes[(*attn, "o_proj", "kernel")] == P("q_heads", "head_dim", "embed")
    shard = traverse_util.flatten_dict(sharding.param_shardings(
        abstract_params(cfg), logical_axes(cfg), abstract_mesh(fsdp=4, tensor=2)))
    # tensor parallelism takes whole heads; head_dim is never split
    assert shard[(*attn, "q_proj", "kernel")].spec == P("fsdp", "tensor", None)
    assert shard[(*attn, "k_proj", "bias")].spec == P("tensor", None)
    assert shard[(*attn, "o_proj", "kernel")].spec == P("tensor", None, "fsdp")
    assert dict(sharding.DEFAULT_RULES)["head_dim"] is None and dict(sharding.DEFAULT_RULES)["length"] is None


def test_a_mesh_axis_that_does_not_divide_raises_naming_tensor_dimension_and_axis():
    cfg = preset("tiny")  # 2 KV heads: a tensor axis of 4 cannot split them
    with pytest.raises(sharding.ShardingError,
                       match=r"language_model/layers_0/self_attn/k_proj/bias: dimension 0 \('kv_heads', size 2\) "
                             r"of shape \(2, 16\) cannot be sharded over mesh axis 'tensor' \(size 4\): 4 devices "
                             r"do not divide 2"):
        sharding.param_shardings(abstract_params(cfg), logical_axes(cfg), abstract_mesh(tensor=4))
    # several mesh axes on one dimension: the product must divide it
    with pytest.raises(sharding.ShardingError,
                       match=r"positions: dimension 1 \('batch', size 6\).*mesh axis 'fsdp' \(size 4\): "
                             r"'data' \(2\) x 'fsdp' \(4\) = 8 devices do not divide 6"):
        sharding.batch_sharding(abstract_mesh(data=2, fsdp=4), (3, 6, 5), batch_axis=1, name="positions")
    # the rule table decides instead: no sharding of KV heads, and the same mesh is fine
    rules = tuple((k, None if k == "kv_heads" else v) for k, v in sharding.DEFAULT_RULES)
    shard = sharding.param_shardings(abstract_params(cfg), logical_axes(cfg), abstract_mesh(tensor=4), rules)
    assert shard["language_model"]["layers_0"]["self_attn"]["k_proj"]["kernel"].spec == P("fsdp", None, None)
    assert shard["language_model"]["layers_0"]["self_attn"]["q_proj"]["kernel"].spec == P("fsdp", "tensor", None)


def test_activation_rules_set_and_restore_mesh_and_rules():
    mesh = sharding.make_mesh()
    assert not nn.get_logical_axis_rules() and jax.sharding.get_abstract_mesh().empty
    with sharding.activation_rules(mesh) as m:
        assert m is mesh
        assert tuple(nn.get_logical_axis_rules()) == sharding.DEFAULT_RULES
        assert jax.sharding.get_abstract_mesh() == mesh.abstract_mesh
    assert not nn.get_logical_axis_rules() and jax.sharding.get_abstract_mesh().empty


def _image_batch():
    model = Qwen2_5_VL.from_config(preset("tiny"))
    rng = np.random.default_rng(0)
    grids = [(1, 4, 4)]
    ids, mask = pad_batch([sample_ids(rng, [3, 2], grids), sample_ids(rng, [5], [])])
    ids = np.where(ids == 250, model.config.image_token_id, ids)
    return model.prepare(ids, mask, pixels(rng, grids), np.array(grids))


def test_global_batch_on_one_process():
    batch = _image_batch()
    mesh = sharding.make_mesh()
    got = sharding.global_batch(batch, mesh)
    assert got["positions"].sharding.spec == P(None, ("data", "fsdp"), None)
    for key in ("input_ids", "attention_mask", "positions", "rope_deltas"):
        np.testing.assert_array_equal(np.asarray(got[key]), batch[key], err_msg=key)
    for key, v in batch["image"].items():
        np.testing.assert_array_equal(np.asarray(got["image"][key]), v, err_msg=key)
    # Several processes: tests/processing/test_join_tables.py, tests/rl/test_multiprocess.py.
