"""LoRA adapters on Qwen2.5-VL's decoder projections (issue 25), through qwix's LoraProvider.

qwix intercepts the dot_general of every module whose path fullmatches `LoraSpec.targets` (paths
like `language_model/layers_3/self_attn/q_proj`) and adds x A B * alpha / rank, with A
[in, rank] (He-uniform) and B [rank, out] (zeros, so a new adapter changes nothing) stored beside
the kernel as `kernel_lora_a` / `kernel_lora_b`; `in` and `out` are the kernel's contracted and
kept axes flattened in its own order (q_proj [D, H, hd]: A [D, r], B [r, H * hd]). A kernel
is laid out (contracted axes..., kept axes...), so A @ B reshapes onto it: `merged` folds the
adapters into the base weights for the rollout and for export.

Params stay plain pytrees: `adapters(params)` are the `*_lora_a` / `*_lora_b` leaves, `base(params)`
the rest, `combined(base, adapters)` the tree the wrapped module applies. The wrapped module's
methods are the base module's (`METHODS`), so every caller (`completion_logprobs`, the sampler)
takes it in place of the base module.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix

from mmjax.config_help import help_text

# The decoder's attention and MLP projections (PEFT's usual q/k/v/o + gate/up/down).
DECODER_TARGETS = r"language_model/layers_\d+/(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)"
# Every method callers apply on Qwen25VLModule (qwix wraps only the methods it is given).
METHODS = ("__call__", "decode", "embed", "embed_batch", "encode_vision", "logits", "head_kernel")
SUFFIXES = ("_lora_a", "_lora_b")


class LoraError(ValueError):
    """A LoRA setting or adapter tree that cannot be used (the message names it)."""


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """config.lora: LoRA adapters (issue 25); rank 0 = off (full fine-tuning)."""
    rank: int = dataclasses.field(default=0, metadata=help_text(
        "adapter rank r; 0 = off, every param trains (full fine-tuning); PEFT's r, TRL / Tunix examples 8-64"))
    alpha: float = dataclasses.field(default=16.0, metadata=help_text(
        "the update is x A B * alpha / r; PEFT's lora_alpha (its default 8; 2r is the common choice)"))
    dropout: float = dataclasses.field(default=0.0, metadata=help_text(
        "dropout on the adapters' input while training; PEFT's lora_dropout, default 0"))
    targets: str = dataclasses.field(default=DECODER_TARGETS, metadata=help_text(
        "regex fullmatched against module paths (language_model/layers_3/self_attn/q_proj) of the projections "
        "that get adapters; default the decoder's q/k/v/o and gate/up/down (PEFT's all-linear on the LLM)"))

    def __post_init__(self):
        if not (isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 0):
            raise LoraError(f"lora.rank={self.rank!r}: must be an int >= 0 (0 = off)")
        if not self.alpha > 0:
            raise LoraError(f"lora.alpha={self.alpha!r}: must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"lora.dropout={self.dropout!r}: must be in [0, 1)")
        try:
            re.compile(self.targets)
        except re.error as e:
            raise LoraError(f"lora.targets={self.targets!r} is not a regex: {e}") from e

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def wrap(module, spec: LoraSpec):
    """`module` with adapters on the projections `spec.targets` matches (qwix model surgery)."""
    if not spec.enabled:
        raise LoraError("lora.rank is 0 (off): there is nothing to wrap")
    provider = qwix.LoraProvider(module_path=spec.targets, rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout)
    return qwix.apply_lora_to_model(module, provider, methods=METHODS)


def _is_adapter(path) -> bool:
    return str(getattr(path[-1], "key", path[-1])).endswith(SUFFIXES)


def _filtered(tree, keep) -> dict:
    """The nested dict of `tree`'s leaves whose path satisfies keep(path)."""
    out: dict = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if keep(path):
            node = out
            for key in path[:-1]:
                node = node.setdefault(key.key, {})
            node[path[-1].key] = leaf
    return out


def adapters(params) -> dict:
    """The adapter leaves (`*_lora_a`, `*_lora_b`) of a combined param tree."""
    return _filtered(params, _is_adapter)


def base(params) -> dict:
    """The base model's leaves of a combined param tree (everything but the adapters)."""
    return _filtered(params, lambda path: not _is_adapter(path))


def combined(base_params, adapter_params) -> dict:
    """One tree of the base params with the adapters beside their kernels."""
    def merge(a, b):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and key in out else value
        return out
    return merge(base_params, adapter_params)


def init_adapters(module, spec: LoraSpec, rng: jax.Array, dtype=jnp.float32) -> dict:
    """New adapters for `module`'s projections: A He-uniform (qwix's and PEFT's kind of init), B zeros.

    The shapes come from tracing the wrapped decoder once (jax.eval_shape: no compute, no
    memory); each A draws from rng folded with its path's index, so the result does not depend
    on the devices. Adapters are float32 (the trainable master weights) whatever the base dtype."""
    wrapped = wrap(module, spec)
    cfg = module.cfg
    x = jnp.zeros((1, 2, cfg.text.hidden_size), jnp.float32)
    positions = jnp.zeros((3, 1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: wrapped.init(jax.random.key(0), x, positions, jnp.ones((1, 2), bool),
                                                 method="decode"))["params"]
    boxed = lambda v: hasattr(v, "unbox")  # noqa: E731  qwix boxes its params with their logical axes
    found = adapters(jax.tree.map(lambda v: v.unbox() if boxed(v) else v, shapes, is_leaf=boxed))
    if not found:
        raise LoraError(f"lora.targets={spec.targets!r} matches no projection of the decoder (paths look like "
                        "language_model/layers_0/self_attn/q_proj)")
    he = jax.nn.initializers.he_uniform()
    paths, tree = jax.tree_util.tree_flatten_with_path(found)
    return jax.tree.unflatten(tree, [
        he(jax.random.fold_in(rng, i), leaf.shape, dtype) if str(path[-1].key).endswith("_lora_a")
        else jnp.zeros(leaf.shape, dtype) for i, (path, leaf) in enumerate(paths)])


def merged(base_params, adapter_params, spec: LoraSpec) -> dict:
    """The base params with every adapter folded in: kernel + (A @ B) * alpha / r, in the kernel's
    dtype (the policy the adapters define, as one plain model: the rollout's and the export's)."""
    def fold(base_node, adapter_node):
        out = dict(base_node)
        for key, value in adapter_node.items():
            if isinstance(value, dict):
                out[key] = fold(base_node[key], value)
        for key in [k for k in adapter_node if k.endswith("_lora_a")]:
            weight = key[:-len("_lora_a")]
            kernel = base_node[weight]
            delta = (adapter_node[key].astype(jnp.float32) @ adapter_node[weight + "_lora_b"].astype(jnp.float32))
            out[weight] = (kernel.astype(jnp.float32) + spec.scale * delta.reshape(kernel.shape)).astype(kernel.dtype)
        return out
    return fold(base_params, adapter_params)


_PEFT_PATH = re.compile(r"language_model/layers_(\d+)/(self_attn|mlp)/(\w+_proj)/kernel_lora_(a|b)")


def peft_tensors(adapter_params) -> dict[str, np.ndarray]:
    """The adapters under PEFT's names for transformers' Qwen2.5-VL (lora_A.weight [r, in],
    lora_B.weight [out, r]; `adapter_model.safetensors`)."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(adapter_params):
        name = "/".join(str(k.key) for k in path)
        m = _PEFT_PATH.fullmatch(name)
        if m is None:
            raise LoraError(f"adapter {name}: only the decoder's projections export to PEFT names")
        layer, block, proj, ab = m.groups()
        key = f"base_model.model.model.language_model.layers.{layer}.{block}.{proj}.lora_{ab.upper()}.weight"
        out[key] = np.ascontiguousarray(np.asarray(leaf, np.float32).T)
    return out


def peft_config(adapter_params, spec: LoraSpec, base_model: str = "") -> dict[str, Any]:
    """PEFT's adapter_config.json for these adapters. target_modules is a regex of exactly the adapted
    decoder projections (a bare "gate_proj" would also adapt the vision tower's MLPs in PEFT)."""
    found, layers = set(), set()
    for path, _ in jax.tree_util.tree_leaves_with_path(adapter_params):
        m = _PEFT_PATH.fullmatch("/".join(str(k.key) for k in path))
        if m is None:
            raise LoraError(f"adapter {jax.tree_util.keystr(path)}: only the decoder's projections export to PEFT")
        found.add((m.group(2), m.group(3)))
        layers.add(int(m.group(1)))
    layers = sorted(layers)
    modules = "|".join(f"{block}\\.{proj}" for block, proj in sorted(found))
    targets = f"model\\.language_model\\.layers\\.({'|'.join(map(str, layers))})\\.({modules})"
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "target_modules": targets,
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True}


PEFT_EXPORT = "peft_adapter"  # <workdir>/peft_adapter: adapter_config.json + adapter_model.safetensors


def save_peft(out_dir: str, adapter_params, spec: LoraSpec, base_model: str = "") -> str:
    """The adapters as a PEFT folder (`peft.PeftModel.from_pretrained(transformers_model, out_dir)`),
    built beside `out_dir` and swapped in whole (mmjax.atomic_dir): a killed save leaves the old one."""
    import json
    import os

    import safetensors.numpy

    from mmjax import atomic_dir
    atomic_dir.recover_replace(out_dir)
    host = jax.tree.map(lambda a: np.asarray(a.addressable_shards[0].data if hasattr(a, "addressable_shards") else a),
                        adapter_params)  # replicated: every process holds all of it
    staging = atomic_dir.staging_path(out_dir)
    os.makedirs(staging, exist_ok=True)
    safetensors.numpy.save_file(peft_tensors(host), os.path.join(staging, "adapter_model.safetensors"))
    with open(os.path.join(staging, "adapter_config.json"), "w") as f:
        json.dump(peft_config(host, spec, base_model), f, indent=2)
    atomic_dir.replace_path(staging, out_dir)
    return out_dir
