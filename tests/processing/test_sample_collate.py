"""process_sample against transformers' Qwen2_5_VLProcessor + get_rope_index; collate padding."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from mmjax.processing.image import ImageProcessorConfig
from mmjax.processing.sample import collate, process_sample

CFG = ImageProcessorConfig(min_pixels=8 * 784, max_pixels=40 * 784)  # small grids keep this quick


def _images():
    return [skimage.data.chelsea(), skimage.data.coffee()[::2, ::3]]


def _video():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 60, 90, 3), dtype=np.uint8)


MESSAGES = {
    "text": [{"role": "user", "content": "Say hi."}],
    "images": [{"role": "user", "content": [
        {"type": "text", "text": "Tile 1: "}, {"type": "image"},
        {"type": "text", "text": "\nTile 2: "}, {"type": "image"}, {"type": "text", "text": "\nOrder them."}]}],
    "mixed": [
        {"role": "system", "content": "Think first."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens? Compare with"},
                                     {"type": "image"}]},
    ],
}


def _make(name, tiny_tok, tiny_ids, **kw):
    images = {"text": [], "images": _images(), "mixed": _images()[:1]}[name]
    videos = [_video()] if name == "mixed" else []
    return process_sample(MESSAGES[name], images, videos, tokenizer=tiny_tok, image_cfg=CFG, token_ids=tiny_ids,
                          video_fps=2.0, **kw)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_images_match_transformers_processor(add_generation_prompt, tiny_tok, tiny_ids, hf_processor):
    sample = _make("images", tiny_tok, tiny_ids, add_generation_prompt=add_generation_prompt)
    text = hf_processor.apply_chat_template(MESSAGES["images"], tokenize=False,
                                            add_generation_prompt=add_generation_prompt)
    ref = hf_processor(text=[text], images=_images(), return_tensors="np",
                       images_kwargs={"size": {"shortest_edge": CFG.min_pixels, "longest_edge": CFG.max_pixels}})
    np.testing.assert_array_equal(sample["input_ids"], ref["input_ids"][0])
    np.testing.assert_array_equal(sample["mm_token_type_ids"], ref["mm_token_type_ids"][0])
    np.testing.assert_array_equal(sample["image_grid_thw"], ref["image_grid_thw"])
    np.testing.assert_allclose(sample["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-6)
    assert sample["pixel_values_videos"].shape == (0, 1176) and sample["video_grid_thw"].shape == (0, 3)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_sample_positions_match_transformers(name, tiny_tok, tiny_ids, hf_rope):
    sample = _make(name, tiny_tok, tiny_ids)
    ids = sample["input_ids"][None]
    ref, ref_deltas = hf_rope(ids, sample["mm_token_type_ids"][None], None, sample["image_grid_thw"],
                              sample["video_grid_thw"], sample["second_per_grid_ts"], 2)
    np.testing.assert_array_equal(sample["position_ids"], ref[:, 0])
    np.testing.assert_array_equal(sample["rope_deltas"], ref_deltas[0])


def test_video_sample_layout(tiny_tok, tiny_ids):
    sample = _make("mixed", tiny_tok, tiny_ids)
    (grid,) = sample["video_grid_thw"]
    assert grid[0] == 3  # 5 frames padded to 6, 2 frames a temporal patch
    video_positions = np.flatnonzero(sample["input_ids"] == tiny_ids.video_token_id)
    assert len(video_positions) == np.prod(grid) // 4
    assert np.all(np.diff(video_positions) == 1)  # one contiguous run ...
    assert sample["input_ids"][video_positions[0] - 1] == tiny_ids.vision_start_token_id  # ... after <|vision_start|>
    assert sample["input_ids"][video_positions[-1] + 1] == tiny_ids.vision_end_token_id
    assert sample["pixel_values_videos"].shape == (np.prod(grid), 1176)
    np.testing.assert_array_equal(sample["second_per_grid_ts"], np.float32([1.0]))


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_collate_matches_transformers_on_padded_batch(padding_side, tiny_tok, tiny_ids, hf_rope):
    samples = [_make(name, tiny_tok, tiny_ids) for name in ("images", "text", "mixed")]
    batch = collate(samples, pad_id=tiny_ids.pad_token_id, padding_side=padding_side)
    lengths = [len(s["input_ids"]) for s in samples]
    length = max(lengths)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, length)
    assert batch["position_ids"].shape == (3, 3, length) and batch["rope_deltas"].shape == (3, 1)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for b, sample in enumerate(samples):
        row = batch["input_ids"][b]
        real = row[length - lengths[b]:] if padding_side == "left" else row[: lengths[b]]
        pads = row[: length - lengths[b]] if padding_side == "left" else row[lengths[b]:]
        np.testing.assert_array_equal(real, sample["input_ids"])
        assert np.all(pads == tiny_ids.pad_token_id)
    np.testing.assert_array_equal(batch["pixel_values"], np.concatenate([s["pixel_values"] for s in samples]))
    np.testing.assert_array_equal(batch["image_grid_thw"], np.concatenate([s["image_grid_thw"] for s in samples]))
    assert batch["video_grid_thw"].shape == (1, 3) and batch["second_per_grid_ts"].shape == (1,)

    ref, ref_deltas = hf_rope(batch["input_ids"], batch["mm_token_type_ids"], batch["attention_mask"],
                              batch["image_grid_thw"], batch["video_grid_thw"], batch["second_per_grid_ts"], 2)
    np.testing.assert_array_equal(batch["position_ids"], ref)
    np.testing.assert_array_equal(batch["rope_deltas"], ref_deltas)


def test_collate_pad_to(tiny_tok, tiny_ids):
    samples = [_make("text", tiny_tok, tiny_ids), _make("images", tiny_tok, tiny_ids)]
    longest = len(samples[1]["input_ids"])
    batch = collate(samples, pad_id=tiny_ids.pad_token_id, pad_to=longest + 5)
    assert batch["input_ids"].shape == (2, longest + 5)
    with pytest.raises(ValueError, match=f"sample 1 has {longest} tokens, more than pad_to={longest - 1}"):
        collate(samples, pad_id=tiny_ids.pad_token_id, pad_to=longest - 1)


def test_truncated_placeholders_are_rejected(tiny_tok, tiny_ids):
    good = _make("images", tiny_tok, tiny_ids)
    cut = int(np.flatnonzero(good["mm_token_type_ids"])[-1]) - 2  # drops the last 3 image placeholders
    truncated = {**good, **{k: good[k][..., :cut] for k in ("input_ids", "mm_token_type_ids", "position_ids")}}
    with pytest.raises(ValueError, match="sample 1: .* image placeholder tokens .* merged patches"):
        collate([good, truncated], pad_id=tiny_ids.pad_token_id)


def test_media_count_mismatch_is_rejected(tiny_tok, tiny_ids):
    with pytest.raises(ValueError, match=r"2 <\|image_pad\|> placeholder\(s\) but 1 image grid\(s\)"):
        process_sample(MESSAGES["images"], _images()[:1], tokenizer=tiny_tok, image_cfg=CFG, token_ids=tiny_ids)
