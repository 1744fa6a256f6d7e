"""Qwen2.5-VL in Flax.

    from mmjax.models import qwen2_5_vl
    model = qwen2_5_vl.load_hf("path/to/hf_folder")          # float32 unless dtype= is given
    logits = model.logits(input_ids, attention_mask, pixel_values, image_grid_thw)  # [B, T, V]
    model.save_hf("out_folder")

`Qwen2_5_VL` (api.py) only holds the config and the params; the computation is the pure
functions of `Qwen25VLModule` (model.py), which the sampler and the learner call directly.
"""

from mmjax.models.qwen2_5_vl.config import ConfigError, Qwen25VLConfig, TextConfig, VisionConfig
from mmjax.models.qwen2_5_vl.presets import PRESETS, preset
from mmjax.models.qwen2_5_vl.api import Qwen2_5_VL, load_hf
from mmjax.models.qwen2_5_vl.hf_keys import CheckpointError
from mmjax.models.qwen2_5_vl.model import Qwen25VLModule

__all__ = ["CheckpointError", "ConfigError", "PRESETS", "Qwen25VLModule", "Qwen25VLConfig", "Qwen2_5_VL", "TextConfig",
           "VisionConfig", "load_hf", "preset"]
