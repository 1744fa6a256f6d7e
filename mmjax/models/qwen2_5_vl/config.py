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

SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "quick_gelu")
SUPPORTED_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)


class ConfigError(ValueError):
    """A config field the port does not support or cannot read."""


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    hidden_act: str = "silu"
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 2
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
    num_key_value_heads: int = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 128000
    rms_norm_eps: float = 1e-6
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

    # ---- HF config.json -------------------------------------------------------------

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json") -> "Qwen25VLConfig":
        archs = d.get("architectures") or list(SUPPORTED_ARCHITECTURES)
        unsupported = [a for a in archs if a not in SUPPORTED_ARCHITECTURES]
        if unsupported or d.get("model_type", "qwen2_5_vl") != "qwen2_5_vl":
            raise ConfigError(
                f"{source}: architectures={archs} model_type={d.get('model_type')!r}; mmjax ports "
                f"only {SUPPORTED_ARCHITECTURES} (model_type 'qwen2_5_vl')"
            )
        # 4.x keeps text fields at the top level; 5.x nests them under text_config.
        t = dict(d)
        t.update(d.get("text_config") or {})
        if t.get("use_sliding_window"):
            raise ConfigError(
                f"{source}: field use_sliding_window=true is not supported by mmjax "
                "(Qwen2.5-VL checkpoints ship with it false)"
            )
        rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise ConfigError(
                f"{source}: field rope_parameters.rope_type={rope_type!r} is not supported "
                "(only default/mrope)"
            )
        if "mrope_section" not in rope:
            raise ConfigError(
                f"{source}: field rope_parameters.mrope_section (or rope_scaling.mrope_section) is missing"
            )
        v = dict(d.get("vision_config") or {})
        vrope = v.get("rope_parameters") or {}
        eos = t.get("eos_token_id", 151645)
        text = TextConfig(
            vocab_size=t["vocab_size"],
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_hidden_layers=t["num_hidden_layers"],
            num_attention_heads=t["num_attention_heads"],
            num_key_value_heads=t.get("num_key_value_heads") or t["num_attention_heads"],
            hidden_act=t.get("hidden_act", "silu"),
            max_position_embeddings=t.get("max_position_embeddings", 32768),
            rms_norm_eps=t.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 1000000.0))),
            mrope_section=tuple(rope["mrope_section"]),
            bos_token_id=t.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=t.get("pad_token_id"),
        )
        vdef = VisionConfig()
        vision = VisionConfig(
            depth=v.get("depth", vdef.depth),
            hidden_size=v.get("hidden_size", vdef.hidden_size),
            intermediate_size=v.get("intermediate_size", vdef.intermediate_size),
            num_heads=v.get("num_heads", vdef.num_heads),
            hidden_act=v.get("hidden_act", "silu"),
            in_channels=v.get("in_channels", 3),
            patch_size=v.get("patch_size", 14),
            spatial_merge_size=v.get("spatial_merge_size", 2),
            temporal_patch_size=v.get("temporal_patch_size", 2),
            tokens_per_second=v.get("tokens_per_second", 4),
            window_size=v.get("window_size", 112),
            out_hidden_size=v.get("out_hidden_size", text.hidden_size),
            fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", vdef.fullatt_block_indexes)),
            rope_theta=float(vrope.get("rope_theta", 10000.0)),
        )
        try:
            return cls(
                text=text,
                vision=vision,
                image_token_id=d.get("image_token_id", 151655),
                video_token_id=d.get("video_token_id", 151656),
                vision_start_token_id=d.get("vision_start_token_id", 151652),
                vision_end_token_id=d.get("vision_end_token_id", 151653),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", t.get("tie_word_embeddings", False))),
                dtype=str(d.get("dtype") or d.get("torch_dtype") or t.get("dtype") or "bfloat16"),
            )
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
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_hf_dict(d, source=path)
        except KeyError as e:
            raise ConfigError(f"{path}: required field {e.args[0]!r} is missing") from e

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


def validate(cfg: Qwen25VLConfig) -> None:
    t, v = cfg.text, cfg.vision
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


def _vision(out_hidden_size: int) -> VisionConfig:
    # The three released sizes share one 32-block ViT and differ only in the merger output.
    return VisionConfig(out_hidden_size=out_hidden_size)


PRESETS: dict[str, Qwen25VLConfig] = {
    # Qwen/Qwen2.5-VL-3B-Instruct config.json
    "3b": Qwen25VLConfig(
        text=TextConfig(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
        ),
        vision=_vision(2048),
        tie_word_embeddings=True,
    ),
    # Qwen/Qwen2.5-VL-7B-Instruct config.json
    "7b": Qwen25VLConfig(
        text=TextConfig(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        ),
        vision=_vision(3584),
    ),
    # Qwen/Qwen2.5-VL-32B-Instruct config.json
    "32b": Qwen25VLConfig(
        text=TextConfig(
            vocab_size=152064,
            hidden_size=5120,
            intermediate_size=27648,
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
        ),
        vision=_vision(5120),
    ),
    # BENCH.md "tiny": tests and the CPU demo. Special ids sit at the top of the vocabulary.
    "tiny": Qwen25VLConfig(
        text=TextConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=(2, 3, 3),
            max_position_embeddings=4096,
            bos_token_id=None,
            eos_token_id=1019,
            pad_token_id=1018,
        ),
        vision=VisionConfig(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=(1,),
        ),
        image_token_id=1020,
        video_token_id=1021,
        vision_start_token_id=1022,
        vision_end_token_id=1023,
        dtype="float32",
    ),
    # BENCH.md "bench": about 35 M parameters.
    "bench": Qwen25VLConfig(
        text=TextConfig(
            vocab_size=8192,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            mrope_section=(8, 12, 12),
            max_position_embeddings=8192,
            bos_token_id=None,
            eos_token_id=8187,
            pad_token_id=8186,
        ),
        vision=VisionConfig(
            depth=4,
            hidden_size=256,
            intermediate_size=512,
            num_heads=4,
            out_hidden_size=512,
            window_size=112,
            fullatt_block_indexes=(1, 3),
        ),
        image_token_id=8188,
        video_token_id=8189,
        vision_start_token_id=8190,
        vision_end_token_id=8191,
        dtype="float32",
    ),
}


def preset(name: str) -> Qwen25VLConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]
