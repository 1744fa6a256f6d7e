"""The Hugging Face <-> mmjax mapping of Qwen2.5-VL tensors: keys, layouts and array shapes.

Every HF tensor maps to exactly one mmjax leaf through a reversible rule (rename, and
transpose for Linear weights / reshape for the patch Conv3d / split of the decoder's
attention projections into [heads, head_dim]), so HF -> mmjax -> HF is bit exact and keeps
the key set. Checkpoints use one of two key layouts: the hub layout
(`visual.*`, `model.*`, `lm_head.*`) or transformers 5's module layout
(`model.visual.*`, `model.language_model.*`). Pure functions of names and arrays: the files
are read and written by `hf`.
"""

from __future__ import annotations

import re

import numpy as np

from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig

HUB_LAYOUT = "hub"          # visual.*, model.layers.*, lm_head.weight
MODULE_LAYOUT = "module"    # model.visual.*, model.language_model.*, lm_head.weight

_PREFIXES = {
    HUB_LAYOUT: {"visual": "visual.", "language_model": "model.", "lm_head": "lm_head."},
    MODULE_LAYOUT: {"visual": "model.visual.", "language_model": "model.language_model.",
                    "lm_head": "lm_head."},
}
_NORMS = ("norm1", "norm2", "ln_q", "input_layernorm", "post_attention_layernorm", "norm")
# The decoder's attention projections keep heads as an axis of their own (language.SelfAttention):
# q/k/v kernels [embed, heads, head_dim] and biases [heads, head_dim]; o_proj [heads, head_dim, embed].
_HEADS_IN, _HEADS_OUT = ("q_proj", "k_proj", "v_proj"), ("o_proj",)


class CheckpointError(ValueError):
    """A missing, corrupt or mismatched checkpoint: HF safetensors or mmjax's own (train.checkpoints)."""


def detect_layout(keys) -> str:
    return MODULE_LAYOUT if any(k.startswith("model.language_model.") for k in keys) else HUB_LAYOUT


def hf_key_to_path(key: str, layout: str) -> tuple[tuple[str, ...], str]:
    """('visual','blocks_0','attn','qkv','kernel'), kind  for  'visual.blocks.0.attn.qkv.weight'.

    kind says how the array changes: 'linear' (transpose), 'patch' (Conv3d -> matmul),
    'heads_in' (transpose, then out features -> [heads, head_dim]), 'heads_bias' ([heads,
    head_dim]), 'heads_out' (transpose, then in features -> [heads, head_dim]), 'copy'.
    """
    for top, prefix in sorted(_PREFIXES[layout].items(), key=lambda kv: -len(kv[1])):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            break
    else:
        raise CheckpointError(f"tensor {key!r} is not part of a Qwen2.5-VL checkpoint ({layout} layout)")
    if top == "lm_head":
        if rest != "weight":
            raise CheckpointError(f"tensor {key!r}: unexpected lm_head parameter")
        return ("lm_head", "kernel"), "linear"
    if top == "visual" and rest == "patch_embed.proj.weight":
        return ("visual", "patch_embed"), "patch"
    # blocks.3 -> blocks_3, layers.3 -> layers_3, mlp.0 -> mlp_0
    parts = re.sub(r"\.(\d+)(?=\.)", r"_\1", rest).split(".")
    *modules, leaf = parts
    heads = _heads_kind(top, modules)
    if leaf == "bias":
        return (top, *modules, "bias"), ("heads_bias" if heads == "heads_in" else "copy")
    if leaf != "weight":
        raise CheckpointError(f"tensor {key!r}: unexpected parameter {leaf!r}")
    if modules and modules[-1] in _NORMS:
        return (top, *modules, "scale"), "copy"
    if modules == ["embed_tokens"]:
        return (top, "embed_tokens", "embedding"), "copy"
    return (top, *modules, "kernel"), heads or "linear"


def _heads_kind(top: str, modules) -> str | None:
    """'heads_in' / 'heads_out' for the decoder's attention projections, else None."""
    if top != "language_model" or len(modules) < 2 or modules[-2] != "self_attn":
        return None
    if modules[-1] in _HEADS_IN:
        return "heads_in"
    return "heads_out" if modules[-1] in _HEADS_OUT else None


def path_to_hf_key(path: tuple[str, ...], layout: str) -> tuple[str, str]:
    top, *rest = path
    prefix = _PREFIXES[layout][top]
    if path == ("lm_head", "kernel"):
        return "lm_head.weight", "linear"
    if path == ("visual", "patch_embed"):
        return prefix + "patch_embed.proj.weight", "patch"
    *modules, leaf = rest
    name = ".".join(re.sub(r"^(blocks|layers|mlp)_(\d+)$", r"\1.\2", m) for m in modules)
    heads = _heads_kind(top, modules)
    if leaf == "bias":
        return f"{prefix}{name}.bias", ("heads_bias" if heads == "heads_in" else "copy")
    return f"{prefix}{name}.weight", ((heads or "linear") if leaf == "kernel" else "copy")


def _split_heads(features: int, cfg: Qwen25VLConfig | None, kind: str) -> tuple[int, ...]:
    """(heads, head_dim); (features,) when they are not whole heads, a shape no leaf has, so a
    wrong checkpoint gets the usual 'has shape ..., config.json implies ...' error."""
    if cfg is None:
        raise TypeError(f"mmjax_shape: kind {kind!r} needs the config (its head_dim) to split heads")
    hd = cfg.text.head_dim
    return (features // hd, hd) if features % hd == 0 else (features,)


def mmjax_shape(kind: str, hf_shape: tuple[int, ...], cfg: Qwen25VLConfig | None = None) -> tuple[int, ...]:
    """The shape `to_mmjax` gives an HF tensor of `hf_shape` (the heads kinds need `cfg`)."""
    if kind == "linear":
        return tuple(reversed(hf_shape))
    if kind == "patch":
        return (int(np.prod(hf_shape[1:])), hf_shape[0])
    if kind == "heads_in" and len(hf_shape) == 2:  # [heads * head_dim, embed] -> [embed, heads, head_dim]
        return (hf_shape[1], *_split_heads(hf_shape[0], cfg, kind))
    if kind == "heads_bias" and len(hf_shape) == 1:
        return _split_heads(hf_shape[0], cfg, kind)
    if kind == "heads_out" and len(hf_shape) == 2:  # [embed, heads * head_dim] -> [heads, head_dim, embed]
        return (*_split_heads(hf_shape[1], cfg, kind), hf_shape[0])
    return tuple(hf_shape)


def to_mmjax(kind: str, array: np.ndarray, cfg: Qwen25VLConfig | None = None) -> np.ndarray:
    """An HF tensor in mmjax's layout (a copy whenever the layout differs)."""
    if kind in ("linear", "heads_in", "heads_out"):
        out = np.ascontiguousarray(array.T)
    elif kind == "patch":
        out = np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
    else:
        out = array
    if kind.startswith("heads"):
        out = out.reshape(mmjax_shape(kind, array.shape, cfg))  # contiguous: a view, no copy
    return out


def hf_shape_of(kind: str, shape: tuple[int, ...], cfg: Qwen25VLConfig) -> tuple[int, ...]:
    """The HF shape of an mmjax leaf of `shape`: `mmjax_shape` backwards (for error messages)."""
    if kind == "linear":
        return tuple(reversed(shape))
    if kind == "patch":
        v = cfg.vision
        return (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    if kind == "heads_in":
        return (shape[1] * shape[2], shape[0])
    if kind == "heads_bias":
        return (shape[0] * shape[1],)
    if kind == "heads_out":
        return (shape[2], shape[0] * shape[1])
    return tuple(shape)


def to_hf(kind: str, array: np.ndarray, cfg: Qwen25VLConfig) -> np.ndarray:
    if kind == "linear":
        return np.ascontiguousarray(array.T)
    if kind == "patch":
        v = cfg.vision
        return np.ascontiguousarray(array.T).reshape(
            v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    if kind == "heads_in":  # [embed, heads, head_dim] -> [heads * head_dim, embed]
        return np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
    if kind == "heads_out":  # [heads, head_dim, embed] -> [embed, heads * head_dim]
        return np.ascontiguousarray(array.reshape(-1, array.shape[-1]).T)
    if kind == "heads_bias":
        return array.reshape(-1)
    return array
