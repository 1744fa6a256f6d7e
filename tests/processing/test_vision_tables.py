"""Fixed-shape vision tables: correct on the real rows, padding changes nothing, few compiles."""

import dataclasses

import jax
import numpy as np
import pytest

import mmjax.models.qwen2_5_vl as qwen
from mmjax.data import batching, jigsaw
from mmjax.processing import ImageProcessorConfig, special_token_ids, tiny_tokenizer
from mmjax.processing.buckets import bucket_size
from mmjax.processing.model_inputs import model_batch
from mmjax.processing.vision_tables import vision_tables
from oracle import build_hf_model, hf_logits, pad_batch, pixels, sample_ids

GEOMETRY = dict(spatial_merge_size=2, window_size=56, patch_size=14)  # windows of 2x2 merged tokens


def _segments(gather, segment, n):
    """{segment id: sorted sequence indices} of the real slots of a tile table."""
    out = {}
    for g, s in zip(gather.reshape(-1), segment.reshape(-1)):
        if s >= 0:
            out.setdefault(int(s), []).append(int(g))
    assert all(g < n for v in out.values() for g in v)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("grids", [[(1, 8, 8)], [(1, 4, 6), (1, 10, 14), (2, 6, 4)], [(1, 2, 2)] * 7])
def test_tables_cover_every_window_and_frame_once(grids):
    tables = vision_tables(np.array(grids), **GEOMETRY, min_rows=16)
    n = sum(t * h * w for t, h, w in grids)
    rows = tables["patch_order"].shape[0]
    assert rows == bucket_size(n, 16) and rows % 4 == 0
    # Real positions gather the real pixel rows once each; padding gathers padding.
    assert sorted(tables["patch_order"][:n].tolist()) == list(range(n))
    assert (tables["patch_order"][n:] >= n).all()
    for kind in ("window", "frame"):
        gather, segment, scatter = (tables[f"{kind}_{k}"] for k in ("gather", "segment", "scatter"))
        segs = _segments(gather, segment, n)
        # Each segment is one contiguous run of the window-ordered sequence, and together they
        # partition the real rows.
        covered = sorted(i for v in segs.values() for i in v)
        assert covered == list(range(n))
        assert all(v == list(range(v[0], v[0] + len(v))) for v in segs.values())
        # scatter inverts gather on the real rows.
        np.testing.assert_array_equal(gather.reshape(-1)[scatter[:n]], np.arange(n))
    frame_lens = sorted(len(v) for v in _segments(tables["frame_gather"], tables["frame_segment"], n).values())
    assert frame_lens == sorted(h * w for t, h, w in grids for _ in range(t))
    assert all(len(v) <= 16 for v in _segments(tables["window_gather"], tables["window_segment"], n).values())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("vt"))
    hf_model = build_hf_model(path, seed=5, window=56, fullatt=(1,))
    return hf_model, qwen.load_hf(path, progress=False)


def test_padding_never_changes_a_real_output(pair):
    hf_model, model = pair
    rng = np.random.default_rng(0)
    grids = [(1, 4, 8), (1, 4, 4)]  # 48 patches: a bucket size, so min_rows=1 pads nothing
    ids, mask = pad_batch([sample_ids(rng, [3, 2, 4], grids)])
    pv = pixels(rng, grids)
    logits = {}
    for min_rows in (1, 1024):
        batch = model_batch(model.config.input_spec(min_vision_rows=min_rows), ids, mask, pixel_values=pv,
                            image_grid_thw=np.array(grids))
        assert batch["image"]["pixel_values"].shape[0] == (48 if min_rows == 1 else 1024)
        logits[min_rows] = np.asarray(model.module.apply(
            {"params": model.params}, batch["input_ids"], batch["positions"], batch["attention_mask"],
            image=batch["image"]))
    np.testing.assert_allclose(logits[1024], logits[1], atol=1e-5)
    np.testing.assert_allclose(logits[1024], hf_logits(hf_model, ids, mask, pv, grids), atol=1e-4)


def test_random_jigsaw_batches_compile_once_per_bucket(pair):
    """200 image-jigsaw batches of random image sizes: one compile per distinct bucket."""
    _, model = pair
    tok = tiny_tokenizer()
    ids = special_token_ids(tok)
    cfg = model.config.replace(image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
                               vision_start_token_id=ids.vision_start_token_id,
                               vision_end_token_id=ids.vision_end_token_id,
                               text=dataclasses.replace(model.config.text, vocab_size=len(tok)))
    model = qwen.Qwen2_5_VL.from_config(cfg, seed=0)
    image_cfg = ImageProcessorConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 16)
    process = batching.ProcessSample(tok, image_cfg=image_cfg)
    spec = cfg.input_spec(min_vision_rows=64, max_pixels=image_cfg.max_pixels)
    batcher = batching.Batcher(pad_id=ids.pad_token_id, spec=spec)
    task = jigsaw.ImageJigsaw(rows=2, cols=2)
    forward = jax.jit(lambda p, b: model.module.apply({"params": p}, b["input_ids"], b["positions"],
                                                      b["attention_mask"], image=b["image"]))
    rng = np.random.default_rng(0)
    keys, exact = set(), set()
    for _ in range(200):
        samples = []
        for _ in range(2):
            h, w = rng.integers(56, 225, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            samples.append(process.map(task.apply({"images": [image], "id": "x", "where": "mem"}, rng)))
        batch = batching.arrays(batcher(samples))
        exact.add(tuple(tuple(sorted(np.prod(s["inputs"]["image_grid_thw"], 1).tolist()))
                        + (len(s["inputs"]["input_ids"]),) for s in samples))
        keys.add(tuple((jax.tree_util.keystr(p), x.shape) for p, x in jax.tree_util.tree_leaves_with_path(batch)))
        forward(model.params, batch)
    compiles = forward._cache_size()
    assert compiles == len(keys), (compiles, len(keys))
    # A handful of buckets (patch rows 64..384 give seven, and a row bucket may hold two tile
    # counts), not one shape per batch.
    assert compiles <= 12, compiles
    assert len(exact) > 5 * compiles  # without buckets, each distinct set of sizes would compile
