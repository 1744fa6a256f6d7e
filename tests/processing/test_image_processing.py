"""mmjax.processing.image against transformers' Qwen2VLImageProcessorPil (the oracle)."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import skimage.data
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from mmjax.processing.image import ImageProcessorConfig, preprocess_images, smart_resize


def _images():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (45, 61, 4), dtype=np.uint8)
    return [
        skimage.data.astronaut(),  # 512 x 512
        skimage.data.chelsea(),  # 300 x 451
        skimage.data.coffee(),  # 400 x 600
        PIL.Image.fromarray(skimage.data.camera()),  # grayscale PIL image -> RGB
        PIL.Image.fromarray(rgba, mode="RGBA"),  # alpha composited on white
        rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),  # upscaled to min_pixels
        rng.integers(0, 256, (5, 900, 3), dtype=np.uint8),  # aspect ratio 180
        rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8),  # downscaled to max_pixels
        rng.integers(0, 256, (57, 85, 3), dtype=np.uint8),
    ]


def test_pixel_values_and_grids_match_transformers():
    images = _images()
    ref = Qwen2VLImageProcessorPil()(images, return_tensors="np")
    out = preprocess_images(images, ImageProcessorConfig())
    np.testing.assert_array_equal(out["image_grid_thw"], ref["image_grid_thw"])
    assert out["image_grid_thw"].dtype == np.int64
    assert out["pixel_values"].dtype == np.float32
    assert out["pixel_values"].shape == ref["pixel_values"].shape
    np.testing.assert_allclose(out["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-6)


def test_non_default_sizes_match_transformers():
    images = [skimage.data.chelsea(), np.random.default_rng(1).integers(0, 256, (90, 31, 3), dtype=np.uint8)]
    cfg = ImageProcessorConfig(min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28)
    ref = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)(images, return_tensors="np")
    out = preprocess_images(images, cfg)
    np.testing.assert_array_equal(out["image_grid_thw"], ref["image_grid_thw"])
    np.testing.assert_allclose(out["pixel_values"], ref["pixel_values"], rtol=0, atol=1e-6)


SIZES = [1, 2, 13, 14, 27, 28, 29, 42, 56, 70, 100, 333, 1000, 4000, 10000]


@pytest.mark.parametrize(
    "factor,min_pixels,max_pixels", [(28, 56 * 56, 28 * 28 * 1280), (28, 128 * 784, 768 * 784), (32, 1024, 2**20)]
)
def test_smart_resize_matches_transformers(factor, min_pixels, max_pixels):
    for height in SIZES:
        for width in SIZES:
            if max(height, width) / min(height, width) > 200:
                with pytest.raises(ValueError):
                    hf_smart_resize(height, width, factor, min_pixels, max_pixels)
                with pytest.raises(ValueError, match="aspect ratio"):
                    smart_resize(height, width, factor, min_pixels, max_pixels)
                continue
            got = smart_resize(height, width, factor, min_pixels, max_pixels)
            assert got == hf_smart_resize(height, width, factor, min_pixels, max_pixels), (height, width)
            assert got[0] % factor == 0 and got[1] % factor == 0


def test_smart_resize_hand_cases():
    # 70 / 28 = 2.5 rounds half to even (2), so 70 x 70 -> 56 x 56 (3136 px, exactly min_pixels).
    assert smart_resize(70, 70) == (56, 56)
    # 42 / 28 = 1.5 rounds to 2; 42 x 42 -> 56 x 56.
    assert smart_resize(42, 42) == (56, 56)
    # 10 x 10 is far below min_pixels: scaled by sqrt(3136 / 100) = 5.6 -> 56 x 56.
    assert smart_resize(10, 10) == (56, 56)
    # 2000 x 2000 above max_pixels: beta = 2000 / sqrt(1003520); floor(2000/beta/28)*28 = 980.
    assert smart_resize(2000, 2000) == (980, 980)


def test_smart_resize_errors_are_clear():
    with pytest.raises(ValueError, match=r"height 1 and width 201 has aspect ratio 201\.0"):
        smart_resize(1, 201)
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 10)


def test_config_from_old_and_new_hf_fields():
    old = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    cfg = ImageProcessorConfig.from_dict(old)
    assert (cfg.min_pixels, cfg.max_pixels) == (3136, 12845056)
    new = {"size": {"shortest_edge": 200704, "longest_edge": 401408}, "image_mean": [0.5, 0.5, 0.5]}
    cfg = ImageProcessorConfig.from_dict(new)
    assert (cfg.min_pixels, cfg.max_pixels, cfg.image_mean) == (200704, 401408, (0.5, 0.5, 0.5))
    # As in transformers, top-level min/max_pixels override `size`.
    both = {**new, "min_pixels": 1000, "max_pixels": None}
    assert ImageProcessorConfig.from_dict(both).min_pixels == 1000
    assert ImageProcessorConfig.from_dict(both).max_pixels == 401408


def test_config_round_trips_with_transformers(tmp_path):
    cfg = ImageProcessorConfig(min_pixels=4 * 784, max_pixels=300 * 784, image_mean=(0.5, 0.4, 0.3))
    cfg.save_pretrained(tmp_path / "ours")
    hf = Qwen2VLImageProcessorPil.from_pretrained(tmp_path / "ours")
    assert (hf.size["shortest_edge"], hf.size["longest_edge"]) == (cfg.min_pixels, cfg.max_pixels)
    assert tuple(hf.image_mean) == cfg.image_mean and tuple(hf.image_std) == cfg.image_std
    assert (hf.patch_size, hf.temporal_patch_size, hf.merge_size) == (14, 2, 2)
    assert int(hf.resample) == cfg.resample and hf.rescale_factor == cfg.rescale_factor

    Qwen2VLImageProcessorPil(min_pixels=8 * 784, max_pixels=80 * 784).save_pretrained(tmp_path / "hf")
    saved = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    back = ImageProcessorConfig.from_pretrained(tmp_path / "hf")
    assert back == ImageProcessorConfig(min_pixels=8 * 784, max_pixels=80 * 784), saved


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((30, 30, 3), np.float32), r"image 1: expected dtype uint8, got float32 \(shape \(30, 30, 3\)\)"),
        (np.zeros((30, 30, 4), np.uint8), r"image 1: expected shape \[H, W, 3\].*got \(30, 30, 4\)"),
        (np.zeros((3, 30, 30), np.uint8), r"image 1: .*got \(3, 30, 30\)"),
        (np.zeros((30, 30), np.uint8), r"image 1: .*got \(30, 30\)"),
        ("photo.jpg", r"image 1: expected a PIL image or a numpy array, got str"),
    ],
)
def test_bad_images_raise_with_index_and_shape(bad, message):
    good = np.zeros((30, 30, 3), np.uint8)
    with pytest.raises(ValueError, match=message):
        preprocess_images([good, bad])
