"""Vision tables of several processes' batches joined into one (mmjax.sharding.process_batch)."""

import jax
import numpy as np
import pytest

from mmjax import sharding
from mmjax.models.qwen2_5_vl import Qwen2_5_VL, preset
from mmjax.processing.vision_tables import join_tables
from oracle import pad_batch, pixels, sample_ids

CFG = preset("tiny")


@pytest.fixture(scope="module")
def model():
    return Qwen2_5_VL.from_config(CFG, seed=3)


def _batch(model, rng, per_sample):
    """Left-padded prompts with images at the tiny config's token ids (as tests/models do)."""
    ids, mask = pad_batch([sample_ids(rng, [3 + i % 3] + [2] * len(g), g) for i, g in enumerate(per_sample)])
    ids = np.where(ids == 250, CFG.image_token_id, ids)
    ids = np.where(ids == 252, CFG.vision_start_token_id, ids)
    ids = np.where(ids == 253, CFG.vision_end_token_id, ids)
    grids = np.array([g for gs in per_sample for g in gs])
    if not len(grids):
        return model.prepare(ids, mask)
    return model.prepare(ids, mask, pixels(rng, grids), grids)


def _tokens(batch) -> int:
    return int((np.asarray(batch["input_ids"]) == CFG.image_token_id).sum())


def test_joined_tables_embed_each_part_as_alone_in_order(model):
    rng = np.random.default_rng(0)
    # Different patch-row buckets, tile counts and (frame_patches unset) frame tile lengths.
    a = _batch(model, rng, [[(1, 4, 4)], [(1, 8, 12)]])
    b = _batch(model, rng, [[(1, 4, 6)], [], [(2, 16, 16), (1, 4, 4)]])
    assert a["image"]["frame_gather"].shape != b["image"]["frame_gather"].shape
    encode = jax.jit(lambda p, v: model.module.apply({"params": p}, v, method="encode_vision"))
    alone = [np.asarray(encode(model.params, x["image"]))[:_tokens(x)] for x in (a, b)]
    joined = join_tables([a["image"], None, b["image"]])  # the middle process has no images
    rows = max(x["image"]["patch_order"].shape[0] for x in (a, b))
    assert joined["pixel_values"].shape == (3 * rows, CFG.vision.patch_dim)
    got = np.asarray(encode(model.params, joined))
    want = np.concatenate(alone)
    np.testing.assert_allclose(got[:len(want)], want, atol=1e-5)
    assert np.isfinite(got).all()
    assert join_tables([None, None]) is None


def test_process_batch_pads_prompts_to_one_length_and_joins_the_tables(model, monkeypatch):
    """One process's view of a 2-process step, the other process's host arrays faked."""
    rng = np.random.default_rng(1)
    mine = _batch(model, rng, [[(1, 4, 4)], []])
    theirs = _batch(model, rng, [[(1, 8, 8), (1, 4, 4)], [(1, 4, 6)]])  # longer prompts
    assert theirs["input_ids"].shape[1] > mine["input_ids"].shape[1]

    def allgather(arrays, other):
        if "length" in arrays:  # the header: prompt length, which vision entries are present
            return [arrays, {"length": np.asarray([other["input_ids"].shape[1]]),
                             "vision": np.asarray([other["image"] is not None, other["video"] is not None])}]
        return [arrays, other["image"]]

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(sharding, "allgather_arrays", lambda arrays: allgather(arrays, theirs))
    out = sharding.process_batch(mine, pad_token_id=7)
    length, extra = theirs["input_ids"].shape[1], theirs["input_ids"].shape[1] - mine["input_ids"].shape[1]
    assert out["input_ids"].shape == (2, length) and out["positions"].shape == (3, 2, length)
    assert (out["input_ids"][:, :extra] == 7).all() and not out["attention_mask"][:, :extra].any()
    assert not out["positions"][:, :, :extra].any()
    np.testing.assert_array_equal(out["input_ids"][:, extra:], mine["input_ids"])
    np.testing.assert_array_equal(out["rope_deltas"], mine["rope_deltas"])  # unchanged by left padding
    for key, value in join_tables([mine["image"], theirs["image"]]).items():
        np.testing.assert_array_equal(out["image"][key], value, err_msg=key)
    assert out["video"] is None

    text_only = _batch(model, rng, [[], []])  # no images here, some on the other process
    monkeypatch.setattr(sharding, "allgather_arrays", lambda arrays: allgather(
        arrays, theirs) if "length" in arrays else [arrays, theirs["image"]])
    out = sharding.process_batch(text_only)
    for key, value in join_tables([None, theirs["image"]]).items():
        np.testing.assert_array_equal(out["image"][key], value, err_msg=key)
