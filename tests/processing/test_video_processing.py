"""mmjax.processing.video.

transformers' Qwen2VLVideoProcessor needs torchvision (absent), so:
  * patch layout and odd-frame padding are checked against its own `patchify`, imported
    with an empty torchvision stand-in (patchify itself only uses torch);
  * pixel values are checked against a reference built from transformers' PIL image
    processor run on each frame (temporal_patch_size=1) and paired up by hand.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import numpy as np
import pytest
import skimage.data
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.video_utils import VideoMetadata

from mmjax.processing.image import ImageProcessorConfig, patchify, smart_resize
from mmjax.processing.video import preprocess_video, preprocess_videos, video_resize_size

HF_VIDEO_MODULE = "transformers.models.qwen2_vl.video_processing_qwen2_vl"


@pytest.fixture
def hf_video_processor_class():
    """transformers' Qwen2VLVideoProcessor class, imported over a stub torchvision, then unloaded."""
    import transformers  # noqa: F401  (its import-time torchvision probe must not see the stub)

    with pytest.MonkeyPatch.context() as mp:
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.v2",
                     "torchvision.transforms.v2.functional"):
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            mp.setitem(sys.modules, name, module)
        sys.modules["torchvision.transforms.v2"].functional = sys.modules["torchvision.transforms.v2.functional"]
        had_module = HF_VIDEO_MODULE in sys.modules
        try:
            yield importlib.import_module(HF_VIDEO_MODULE).Qwen2VLVideoProcessor
        finally:
            if not had_module:
                sys.modules.pop(HF_VIDEO_MODULE, None)


@pytest.mark.parametrize("num_frames", [4, 5])
def test_patchify_matches_transformers_video_patchify(hf_video_processor_class, num_frames):
    frames = np.random.default_rng(num_frames).standard_normal((num_frames, 56, 84, 3)).astype(np.float32)
    videos = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # [1, F, C, H, W]
    patchify_hf = hf_video_processor_class.patchify  # uses no instance state
    ref, gt, gh, gw = patchify_hf(None, videos, patch_size=14, merge_size=2, temporal_patch_size=2)
    padded = np.concatenate([frames, frames[-1:]]) if num_frames % 2 else frames
    ours, grid = patchify(padded, ImageProcessorConfig())
    assert grid == (gt, gh, gw) == ((num_frames + 1) // 2, 4, 6)
    np.testing.assert_array_equal(ours, ref[0].numpy())


def _per_frame_reference(frames: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
    """Frame-wise HF image processing (T=1), last frame repeated to even count, pairs stacked in time."""
    hf = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, temporal_patch_size=1)
    per_frame = hf(list(frames), return_tensors="np")["pixel_values"]
    n = per_frame.shape[0] // len(frames)
    per_frame = per_frame.reshape(len(frames), n, 3, 1, 14, 14)
    if len(frames) % 2:
        per_frame = np.concatenate([per_frame, per_frame[-1:]])
    pairs = per_frame.reshape(-1, 2, n, 3, 14, 14)  # [gt, T, rows, C, P, P]
    return pairs.transpose(0, 2, 3, 1, 4, 5).reshape(-1, 3 * 2 * 14 * 14)


@pytest.mark.parametrize("num_frames", [1, 4, 5])
def test_pixel_values_match_per_frame_image_processor(num_frames):
    base = skimage.data.chelsea()[:200, :300]
    rng = np.random.default_rng(num_frames)
    frames = np.stack([np.roll(base, 7 * i, axis=1) for i in range(num_frames)])
    frames = (frames + rng.integers(0, 3, frames.shape)).clip(0, 255).astype(np.uint8)
    cfg = ImageProcessorConfig(min_pixels=16 * 784, max_pixels=48 * 784)
    pixel_values, grid_thw, seconds = preprocess_video(frames, cfg, fps=2.0)
    h, w = smart_resize(200, 300, 28, cfg.min_pixels, cfg.max_pixels)
    np.testing.assert_array_equal(grid_thw, [[(num_frames + 1) // 2, h // 14, w // 14]])
    assert grid_thw.dtype == np.int64 and pixel_values.dtype == np.float32
    np.testing.assert_allclose(pixel_values, _per_frame_reference(frames, cfg), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(seconds, np.float32([1.0]))  # temporal_patch_size / fps = 2 / 2


def test_second_per_grid_ts_follows_transformers_fps_fallback():
    frames = np.zeros((4, 56, 56, 3), np.uint8)
    out = preprocess_videos([frames, frames], ImageProcessorConfig(), fps=[None, 29.97])
    # Without fps metadata transformers' processor uses VideoMetadata.sampled_fps (24).
    default_fps = VideoMetadata(total_num_frames=4).sampled_fps
    np.testing.assert_array_equal(out["second_per_grid_ts"], np.float32([2 / default_fps, 2 / 29.97]))
    assert out["video_grid_thw"].tolist() == [[2, 4, 4], [2, 4, 4]]
    assert out["pixel_values_videos"].shape == (2 * 2 * 4 * 4, 1176)


def test_cap_pixels_per_frame_budget():
    cfg = ImageProcessorConfig()
    # transformers' qwen-vl-utils style cap: int(128000 * 28 * 28 * 0.9) pixels shared over
    # 600 frames, times temporal_patch_size: 90316800 * 2 // 600 = 301056 pixels a frame.
    assert video_resize_size(600, 1080, 1920, cfg, cap_pixels_per_frame=True) == smart_resize(
        1080, 1920, 28, cfg.min_pixels, 301056
    )
    assert video_resize_size(600, 1080, 1920, cfg) == smart_resize(1080, 1920, 28, cfg.min_pixels, cfg.max_pixels)


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((4, 30, 30, 3), np.float32), r"video 0: expected dtype uint8, got float32"),
        (np.zeros((30, 30, 3), np.uint8), r"video 0: expected shape \[F, H, W, 3\].*got \(30, 30, 3\)"),
        (np.zeros((4, 3, 30, 30), np.uint8), r"video 0: .*got \(4, 3, 30, 30\)"),
        (np.zeros((0, 30, 30, 3), np.uint8), r"video 0: empty video"),
    ],
)
def test_bad_videos_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        preprocess_video(bad)
