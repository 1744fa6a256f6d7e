"""Published Qwen2.5-VL shapes (3B, 7B, 32B) and the BENCH.md test models (tiny, bench)."""

from __future__ import annotations

from mmjax.models.qwen2_5_vl.config import ConfigError, Qwen25VLConfig, TextConfig, VisionConfig

def _vision(out_hidden_size: int) -> VisionConfig:
    # The three released sizes share one 32-block ViT and differ only in the merger output.
    return VisionConfig(hidden_size=1280, tokens_per_second=2, out_hidden_size=out_hidden_size)


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
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
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
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
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
            max_position_embeddings=128000,
            rms_norm_eps=1e-6,
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
            rms_norm_eps=1e-6,
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
            tokens_per_second=2,
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
            rms_norm_eps=1e-6,
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
            tokens_per_second=2,
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
