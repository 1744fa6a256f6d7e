"""Qwen2.5-VL configuration: read from and written to Hugging Face `config.json`.

Both layouts that exist on the hub are read: the transformers 4.x one (text fields at the
top level, `rope_scaling: {type: mrope, mrope_section}`) and the 5.x one (`text_config`,
`rope_parameters`). Writing produces the 5.x layout, which transformers 4.49+ and 5.x load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from mmjax.models.qwen2_5_vl.config_reader import ConfigError, Section, hints, short
from mmjax.processing.model_inputs import InputSpec

SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "quick_gelu")
SUPPORTED_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)




# Defaults are transformers 5.24's Qwen2_5_VL*Config defaults wherever from_hf_dict falls back on
# them, so a field missing from config.json means what it means to transformers. The presets
# below spell out the published values that differ (e.g. ViT width 1280, 128000 positions).
@dataclasses.dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    hidden_size: int = 3584
    intermediate_size: int = 3420
    num_heads: int = 16
    hidden_act: str = "silu"
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 4
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Length of one flattened pixel patch: channels x temporal x patch x patch."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4  # a missing field is 8 to transformers (see from_hf_dict)
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    bos_token_id: int | None = 151643
    eos_token_id: int | tuple[int, ...] | None = 151645
    pad_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"  # the dtype the HF checkpoint declares (`torch_dtype` / `dtype`)

    def __post_init__(self):
        validate(self)

    def replace(self, **kw) -> "Qwen25VLConfig":
        return dataclasses.replace(self, **kw)

    def input_spec(self, min_vision_rows: int = 64, max_pixels: int | None = None):
        """What the host needs to build this model's batches (`mmjax.processing.model_batch`)."""
        v = self.vision
        return InputSpec(vocab_size=self.text.vocab_size, image_token_id=self.image_token_id,
                         video_token_id=self.video_token_id, vision_start_token_id=self.vision_start_token_id,
                         spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
                         patch_size=v.patch_size, patch_dim=v.patch_dim, tokens_per_second=v.tokens_per_second,
                         min_vision_rows=min_vision_rows,
                         frame_patches=None if max_pixels is None else max_pixels // v.patch_size ** 2)

    # ---- HF config.json -------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "Qwen25VLConfig":
        """Read a config.json dict; every field read is type checked (ConfigError names it).

        A missing optional field takes transformers 5.24's default, as Qwen2_5_VLConfig would.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: must hold a JSON object, got {type(d).__name__} {short(d)}")
        top = Section(source, d, "")
        archs = list(top.get("architectures", tuple[str, ...] | None, None) or SUPPORTED_ARCHITECTURES)
        model_type = top.get("model_type", str, "qwen2_5_vl")
        unsupported = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
        if unsupported or model_type != "qwen2_5_vl":
            raise ConfigError(
                f"{source}: architectures={archs} model_type={model_type!r}; mmjax ports "
                f"only {SUPPORTED_ARCHITECTURES} (model_type 'qwen2_5_vl')"
            )
        # 4.x keeps text fields at the top level; 5.x nests them under text_config.
        text = top.section("text_config", fallback=True)
        if text.get("use_sliding_window", bool | None, False):
            raise ConfigError(
                f"{source}: field use_sliding_window=true is not supported by mmjax "
                "(Qwen2.5-VL checkpoints ship with it false)"
            )
        rope = text.section("rope_parameters" if text.get("rope_parameters", dict | None, None)
                            else "rope_scaling")
        rope_type = rope.get("rope_type", str, None) or rope.get("type", str, "default")
        if rope_type not in ("default", "mrope"):
            raise ConfigError(
                f"{source}: field rope_parameters.rope_type={rope_type!r} is not supported "
                "(only default/mrope)"
            )
        if "mrope_section" not in rope.obj:
            raise ConfigError(
                f"{source}: field rope_parameters.mrope_section (or rope_scaling.mrope_section) is missing"
            )
        th, tdef = hints(TextConfig), TextConfig()
        heads = text.get("num_attention_heads", int)
        # transformers: an absent field is 8 heads, an explicit null means one per query head.
        kv_heads = text.get("num_key_value_heads", int | None, 8)
        rope_theta = rope.get("rope_theta", float, None)
        text_cfg = TextConfig(
            **{f: text.get(f, th[f]) for f in ("vocab_size", "hidden_size", "intermediate_size",
                                               "num_hidden_layers")},
            num_attention_heads=heads,
            num_key_value_heads=heads if kv_heads is None else kv_heads,
            **{f: text.get(f, th[f], getattr(tdef, f)) for f in (
                "hidden_act", "max_position_embeddings", "rms_norm_eps", "bos_token_id",
                "eos_token_id", "pad_token_id")},
            rope_theta=text.get("rope_theta", float, tdef.rope_theta) if rope_theta is None else rope_theta,
            mrope_section=rope.get("mrope_section", th["mrope_section"]),
        )
        vision = top.section("vision_config")
        vh, vdef = hints(VisionConfig), VisionConfig()
        vision_cfg = VisionConfig(
            **{f.name: vision.get(f.name, vh[f.name], getattr(vdef, f.name))
               for f in dataclasses.fields(VisionConfig) if f.name != "rope_theta"},
            rope_theta=vision.section("rope_parameters").get("rope_theta", float, vdef.rope_theta),
        )
        h, default = hints(cls), {f.name: f.default for f in dataclasses.fields(cls)}
        # transformers ties when either the root or (pre-v5 saves) text_config says so.
        tie = top.get("tie_word_embeddings", bool, False) or text.get("tie_word_embeddings", bool, False)
        dtype = (top.get("dtype", str | None, None) or top.get("torch_dtype", str | None, None)
                 or text.get("dtype", str | None, None) or default["dtype"])
        token_ids = {f: top.get(f, h[f], default[f]) for f in (
            "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
        try:
            return cls(text=text_cfg, vision=vision_cfg, **token_ids, tie_word_embeddings=tie, dtype=dtype)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from e

    @classmethod
    def from_pretrained(cls, hf_dir: str) -> "Qwen25VLConfig":
        path = os.path.join(hf_dir, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no config.json in the Hugging Face folder {hf_dir!r}")
        try:
            with open(path) as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return cls.from_hf_dict(d, source=path)

    def to_hf_dict(self) -> dict[str, Any]:
        t, v = self.text, self.vision
        eos = list(t.eos_token_id) if isinstance(t.eos_token_id, tuple) else t.eos_token_id
        return {
            "architectures": list(SUPPORTED_ARCHITECTURES),
            "model_type": "qwen2_5_vl",
            "dtype": self.dtype,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": {
                "model_type": "qwen2_5_vl_text",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "hidden_act": t.hidden_act,
                "max_position_embeddings": t.max_position_embeddings,
                "rms_norm_eps": t.rms_norm_eps,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": t.rope_theta,
                    "mrope_section": list(t.mrope_section),
                },
                "use_sliding_window": False,
                "bos_token_id": t.bos_token_id,
                "eos_token_id": eos,
                "pad_token_id": t.pad_token_id,
                "tie_word_embeddings": self.tie_word_embeddings,
            },
            "vision_config": {
                "model_type": "qwen2_5_vl_vision",
                "depth": v.depth,
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_heads": v.num_heads,
                "hidden_act": v.hidden_act,
                "in_channels": v.in_channels,
                "patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "temporal_patch_size": v.temporal_patch_size,
                "tokens_per_second": v.tokens_per_second,
                "window_size": v.window_size,
                "out_hidden_size": v.out_hidden_size,
                "fullatt_block_indexes": list(v.fullatt_block_indexes),
                "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
            },
        }

    def save(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(self.to_hf_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


# ---- typed reading of config.json ---------------------------------------------------

_POSITIVE = {
    "text_config": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                    "rms_norm_eps", "rope_theta"),
    "vision_config": ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels",
                      "patch_size", "spatial_merge_size", "temporal_patch_size", "tokens_per_second",
                      "window_size", "out_hidden_size", "rope_theta"),
}


def validate(cfg: Qwen25VLConfig) -> None:
    t, v = cfg.text, cfg.vision
    # Sizes of 0 or less would otherwise surface as ZeroDivisionError or odd shapes.
    for section, sub in (("text_config", t), ("vision_config", v)):
        for name in _POSITIVE[section]:
            if not getattr(sub, name) > 0:
                raise ConfigError(f"{section}.{name}={getattr(sub, name)} must be > 0")
    if v.out_hidden_size != t.hidden_size:
        raise ConfigError(
            f"vision_config.out_hidden_size={v.out_hidden_size} must equal text_config.hidden_size="
            f"{t.hidden_size} (the merged patches replace the placeholder token embeddings)"
        )
    if any(s < 0 for s in t.mrope_section):
        raise ConfigError(f"mrope_section={list(t.mrope_section)} has a negative entry")
    if t.hidden_size % t.num_attention_heads:
        raise ConfigError(
            f"text_config.hidden_size={t.hidden_size} is not divisible by "
            f"num_attention_heads={t.num_attention_heads}"
        )
    if t.num_attention_heads % t.num_key_value_heads:
        raise ConfigError(
            f"text_config.num_attention_heads={t.num_attention_heads} is not a multiple "
            f"of num_key_value_heads={t.num_key_value_heads}"
        )
    if sum(t.mrope_section) * 2 != t.head_dim:
        raise ConfigError(f"mrope_section={list(t.mrope_section)} must sum to head_dim/2={t.head_dim // 2}")
    if v.hidden_size % v.num_heads or v.head_dim % 4:
        raise ConfigError(
            f"vision_config.hidden_size={v.hidden_size} / num_heads={v.num_heads} must give"
            " a head_dim divisible by 4 (2-D rotary)"
        )
    for name, act in (("text_config.hidden_act", t.hidden_act), ("vision_config.hidden_act", v.hidden_act)):
        if act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"{name}={act!r} is not supported (one of {SUPPORTED_ACTIVATIONS})")
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        if not 0 <= getattr(cfg, name) < t.vocab_size:
            raise ConfigError(
                f"{name}={getattr(cfg, name)} is outside the vocabulary (vocab_size={t.vocab_size})"
            )
    bad = [i for i in v.fullatt_block_indexes if not 0 <= i < v.depth]
    if bad:
        raise ConfigError(
            f"vision_config.fullatt_block_indexes={list(v.fullatt_block_indexes)} has "
            f"{bad} outside depth {v.depth}"
        )
    if v.window_size % (v.patch_size * v.spatial_merge_size):
        raise ConfigError(
            f"vision_config.window_size={v.window_size} must be a multiple of "
            f"patch_size*spatial_merge_size={v.patch_size * v.spatial_merge_size}"
        )


# ---- presets: the published shapes (no weights) ----------------------------------------
