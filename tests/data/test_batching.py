"""Batches: the model batch from processed samples, length buckets, no truncation."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mmjax.data import batching, jigsaw, pipeline, qa, synthetic, video_jigsaw
from mmjax.data.skips import DataError, Skipped
from mmjax.processing import collate, special_token_ids, tiny_tokenizer
from mmjax.processing.model_inputs import InputSpec, model_batch


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def spec(tok):
    ids = special_token_ids(tok)
    return InputSpec(vocab_size=len(tok), image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
                     vision_start_token_id=ids.vision_start_token_id)


@pytest.fixture(scope="module")
def processed(tok, long_video):
    """An image jigsaw, a video jigsaw and a QA sample, processed."""
    shapes = synthetic.ShapesVqaSource(2, size=(112, 140), background="photos")
    rng = np.random.default_rng(0)
    samples = [
        jigsaw.ImageJigsaw(rows=2, cols=2).apply(shapes[0], rng),
        video_jigsaw.VideoJigsaw(num_clips=3, frame_pixels=56 * 56).apply({"videos": [long_video]}, rng),
        qa.QaSample().map(shapes[1]),
    ]
    process = batching.ProcessSample(tok)
    return [process.map(s) for s in samples]


def test_batch_pads_to_the_smallest_bucket_and_keeps_metadata(tok, spec, processed):
    pad = special_token_ids(tok).pad_token_id
    batcher = batching.Batcher(pad_id=pad, spec=spec, bucket_lengths=(64, 512, 1024))
    batch = batcher(processed)
    lengths = [len(p["inputs"]["input_ids"]) for p in processed]
    assert max(lengths) <= 512 < 1024 and max(lengths) > 64
    assert batch["input_ids"].shape == (3, 512) and batch["positions"].shape == (3, 3, 512)
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), lengths)
    assert batch["attention_mask"][:, -1].all()  # left padding
    np.testing.assert_array_equal(batch["num_images"], [4, 0, 1])
    np.testing.assert_array_equal(batch["num_videos"], [0, 3, 0])
    assert batch["meta"]["task"] == ["jigsaw_image", "jigsaw_video", "choice"]
    assert batch["meta"]["solution"][2] in "ABCD"
    # The pipeline's positions (made per sample in the workers) equal model_batch's own
    # (transformers' get_rope_index on the padded batch), which Qwen2_5_VL.prepare uses.
    collated = collate([p["inputs"] for p in processed], pad_id=pad, pad_to=512)
    direct = model_batch(spec, collated["input_ids"], collated["attention_mask"],
                         pixel_values=collated["pixel_values"], image_grid_thw=collated["image_grid_thw"],
                         pixel_values_videos=collated["pixel_values_videos"],
                         video_grid_thw=collated["video_grid_thw"],
                         second_per_grid_ts=collated["second_per_grid_ts"])
    device = batching.arrays(batch)
    assert set(device) == {"input_ids", "attention_mask", "positions", "rope_deltas", "image", "video"}
    for key in ("input_ids", "attention_mask", "positions", "rope_deltas"):
        np.testing.assert_array_equal(device[key], direct[key], err_msg=key)
    for kind in ("image", "video"):
        for key, value in direct[kind].items():
            np.testing.assert_array_equal(device[kind][key], value, err_msg=f"{kind}/{key}")
    # Vision pixels are padded to a bucket, never cut.
    real = len(collated["pixel_values"])
    assert device["image"]["pixel_values"].shape[0] >= real
    np.testing.assert_array_equal(device["image"]["pixel_values"][:real], collated["pixel_values"])
    assert not device["image"]["pixel_values"][real:].any()


def test_overlong_prompts_are_skipped_or_raise_never_truncated(tok, spec):
    sample = jigsaw.ImageJigsaw().apply(
        synthetic.ShapesVqaSource(1, size=(224, 224), background="plain")[0], np.random.default_rng(0))
    full = batching.ProcessSample(tok).map(sample)
    length = len(full["inputs"]["input_ids"])
    fits = batching.ProcessSample(tok, max_prompt_length=length).map(sample)
    np.testing.assert_array_equal(fits["inputs"]["input_ids"], full["inputs"]["input_ids"])
    skipped = batching.ProcessSample(tok, max_prompt_length=length - 1).map(sample)
    assert isinstance(skipped, Skipped) and skipped.reason == "prompt_too_long"
    assert f"{length} tokens" in skipped.detail
    with pytest.raises(DataError, match="prompt_too_long"):
        batching.ProcessSample(tok, max_prompt_length=length - 1, overlong="raise").map(sample)
    with pytest.raises(ValueError, match="exceeds the largest bucket"):
        batching.Batcher(pad_id=0, spec=spec, bucket_lengths=(length - 1,))([full])


def test_an_image_the_processor_upscales_past_max_pixels_is_skipped_not_a_crash(tok):
    # min_pixels = max_pixels = 56 x 56: a 38 x 37 tile grows to min_pixels by HF's rounding up
    # (ceil(38 * 1.49 / 28) = 3, ceil(37 * 1.49 / 28) = 2): 84 x 56 = 24 patches, over max_pixels'
    # 16. The batch layout has room for 16 a frame, so the sample is skipped with a reason instead
    # of crashing the batch.
    from mmjax.data.tasks import make_sample
    from mmjax.processing import ImageProcessorConfig
    tile = np.zeros((38, 37, 3), np.uint8)
    sample = make_sample({"id": "t"}, task="choice", messages=[{"role": "user", "content": [{"type": "image"}]}],
                         solution="A", container="answer", images=[tile])
    cfg = ImageProcessorConfig(min_pixels=56 * 56, max_pixels=56 * 56)
    assert batching.ProcessSample(tok, image_cfg=cfg).map(sample)["inputs"]["image_grid_thw"].tolist() == [[1, 6, 4]]
    skipped = batching.ProcessSample(tok, image_cfg=cfg, frame_patches=16).map(sample)
    assert isinstance(skipped, Skipped) and skipped.reason == "image_too_large" and "24 patches > 16" in skipped.detail
    with pytest.raises(DataError, match="image_too_large"):
        batching.ProcessSample(tok, image_cfg=cfg, frame_patches=16, strict=True).map(sample)


def test_pipeline_batches_restore_exactly(tok, spec):
    source = synthetic.ShapesVqaSource(6, size=(112, 112), background="plain")
    pad = special_token_ids(tok).pad_token_id
    config = pipeline.PipelineConfig(seed=2, batch_size=2, process_index=0, process_count=1)

    def build():
        return pipeline.build_dataset(
            source, [jigsaw.ImageJigsaw(rows=2, cols=2, seed=2), batching.ProcessSample(tok)], config,
            batch_fn=batching.Batcher(pad_id=pad, spec=spec, bucket_lengths=(512,)))

    iterator = iter(build())
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]  # crosses into the second epoch
    restored = iter(build())
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        assert got["meta"] == want["meta"]
        for a, b in zip(jax.tree.leaves(batching.arrays(got)), jax.tree.leaves(batching.arrays(want))):
            np.testing.assert_array_equal(a, b)
    assert {e for b in expected for e in b["meta"]["epoch"]} == {0, 1}
