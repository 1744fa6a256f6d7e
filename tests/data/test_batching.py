"""Batches: processor arrays, length buckets, G-fold repetition, no truncation."""

from __future__ import annotations

import numpy as np
import pytest

from mmjax.data import batching, jigsaw, pipeline, qa, synthetic, video_jigsaw
from mmjax.data.skips import DataError, Skipped
from mmjax.processing import collate, special_token_ids, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


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


def test_batch_pads_to_the_smallest_bucket_and_keeps_metadata(tok, processed):
    batcher = batching.Batcher(pad_id=special_token_ids(tok).pad_token_id, bucket_lengths=(64, 512, 1024))
    batch = batcher(processed)
    lengths = [len(p["inputs"]["input_ids"]) for p in processed]
    assert max(lengths) <= 512 < 1024 and max(lengths) > 64
    assert batch["input_ids"].shape == (3, 512) and batch["position_ids"].shape == (3, 3, 512)
    np.testing.assert_array_equal(batch["attention_mask"].sum(1), lengths)
    assert batch["attention_mask"][:, -1].all()  # left padding
    np.testing.assert_array_equal(batch["num_images"], [4, 0, 1])
    np.testing.assert_array_equal(batch["num_videos"], [0, 3, 0])
    assert batch["meta"]["task"] == ["jigsaw_image", "jigsaw_video", "choice"]
    assert batch["meta"]["solution"][2] in "ABCD"
    # Placeholders equal merged patches per prompt (4 patches merge into one token).
    starts = np.concatenate([[0], np.cumsum(batch["num_images"])])
    for b in range(3):
        grids = batch["image_grid_thw"][starts[b]:starts[b + 1]]
        assert (batch["mm_token_type_ids"][b] == 1).sum() == int(np.prod(grids, 1).sum()) // 4
    assert set(batching.arrays(batch)) == set(batch) - {"meta"}


def test_repeat_for_generations_equals_each_sample_listed_g_times(tok, processed):
    pad = special_token_ids(tok).pad_token_id
    batch = batching.Batcher(pad_id=pad)(processed)
    repeated = batching.repeat_for_generations(batch, 4)
    # Oracle: processing.collate (equal to transformers' get_rope_index) on the repeated list.
    reference = collate([p["inputs"] for p in processed for _ in range(4)], pad_id=pad,
                        pad_to=batch["input_ids"].shape[1])
    for key, value in reference.items():
        np.testing.assert_array_equal(repeated[key], value, err_msg=key)
    np.testing.assert_array_equal(repeated["prompt_index"], np.repeat([0, 1, 2], 4))
    assert repeated["meta"]["id"] == [i for i in batch["meta"]["id"] for _ in range(4)]
    assert batching.repeat_for_generations(batch, 1)["pixel_values"].shape == batch["pixel_values"].shape


def test_overlong_prompts_are_skipped_or_raise_never_truncated(tok):
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
        batching.Batcher(pad_id=0, bucket_lengths=(length - 1,))([full])


def test_pipeline_batches_restore_exactly(tok):
    source = synthetic.ShapesVqaSource(6, size=(112, 112), background="plain")
    pad = special_token_ids(tok).pad_token_id
    config = pipeline.PipelineConfig(seed=2, batch_size=2, process_index=0, process_count=1)

    def build():
        return pipeline.build_dataset(
            source, [jigsaw.ImageJigsaw(rows=2, cols=2, seed=2), batching.ProcessSample(tok)], config,
            batch_fn=batching.Batcher(pad_id=pad, bucket_lengths=(512,)))

    iterator = iter(build())
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(4)]  # crosses into the second epoch
    restored = iter(build())
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        assert got["meta"] == want["meta"]
        for key, value in batching.arrays(want).items():
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert {e for b in expected for e in b["meta"]["epoch"]} == {0, 1}
