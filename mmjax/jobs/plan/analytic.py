"""The planner's own arithmetic: what each part of a job should hold per device, from the
model config and the recipe alone, to set beside XLA's compiled figures.

Parameter counts follow the module's layers (mmjax.models.qwen2_5_vl: q / k / v with bias,
o without; SwiGLU MLPs; the ViT's fused qkv and biased MLP; the merger's two layers); a test
checks them against the real pytrees. Activations are per token of each sequence under the
decoder's remat policy (mmjax.models.remat), as in the recipes' memory notes: a layer keeps its
input (full), or also the tensors its policy saves, and one layer is recomputed at a time.
"""

from __future__ import annotations

import dataclasses

GB = 1e9
ADAM_MOMENTS = 2  # AdamW keeps m and v, float32, for each trainable parameter (optax.adamw)
HEAD_CHUNK = 1024  # completion tokens per float32 head chunk (mmjax.models.qwen2_5_vl.logprobs)


def text_params(cfg) -> int:
    """Decoder parameters: embedding, layers, final norm and (untied) head."""
    t = cfg.text
    d, hd, i = t.hidden_size, t.head_dim, t.intermediate_size
    q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    layer = (d * q + q) + 2 * (d * kv + kv) + q * d + 3 * d * i + 2 * d
    head = 0 if cfg.tie_word_embeddings else d * t.vocab_size
    return t.vocab_size * d + t.num_hidden_layers * layer + d + head


def vision_params(cfg) -> tuple[int, int]:
    """(ViT blocks and patch embedding, merger) parameters."""
    v = cfg.vision
    h, i, m = v.hidden_size, v.intermediate_size, v.hidden_size * v.spatial_merge_size ** 2
    block = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
    merger = h + (m * m + m) + (m * v.out_hidden_size + v.out_hidden_size)
    return v.patch_dim * h + v.depth * block, merger


def param_count(cfg) -> int:
    vit, merger = vision_params(cfg)
    return text_params(cfg) + vit + merger


def trainable_count(cfg, freeze_vision: bool, freeze_merger: bool) -> int:
    vit, merger = vision_params(cfg)
    return text_params(cfg) + (0 if freeze_vision else vit) + (0 if freeze_merger else merger)


def _saved_per_layer(t, policy: str) -> int:
    """Elements per token a decoder layer keeps for its backward pass under `policy`, besides its input."""
    qkv = (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
    return {"full": 0, "save_qkv_proj": qkv, "save_qkv_out": qkv + t.hidden_size,
            "save_dots": qkv + t.hidden_size + 3 * t.intermediate_size}.get(policy, -1)


def layer_working_set(t) -> int:
    """Elements per token of one layer's recompute: q, k, v, o and the MLP's gate, up, act and grad."""
    return (2 * t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim + 4 * t.intermediate_size


def activation_bytes_per_token(cfg, policy: str, compute_bytes: int) -> int:
    """Decoder activations kept per token of a sequence for the backward pass, plus one layer's
    recompute (remat none: every layer's working set and norms)."""
    t = cfg.text
    work = layer_working_set(t)
    saved = _saved_per_layer(t, policy)
    if saved < 0:  # none: every layer keeps everything
        return t.num_hidden_layers * (work + 4 * t.hidden_size) * compute_bytes
    return (t.num_hidden_layers * (t.hidden_size + saved) + work) * compute_bytes


def vision_bytes_per_row(cfg, policy: str, compute_bytes: int) -> int:
    """ViT activations kept per patch row (the same rule for its blocks)."""
    v = cfg.vision
    work = 4 * v.hidden_size + 3 * v.intermediate_size
    if policy == "none":
        return v.depth * (work + 2 * v.hidden_size) * compute_bytes
    return (v.depth * v.hidden_size + work) * compute_bytes


def kv_bytes_per_token(cfg, compute_bytes: int) -> int:
    t = cfg.text
    return t.num_hidden_layers * 2 * t.num_key_value_heads * t.head_dim * compute_bytes


@dataclasses.dataclass(frozen=True)
class Shape:
    """The worst case a job meets, global (all devices): prompts, their lengths and patch rows."""
    prompts: int           # B, global
    prompt_slots: int      # Tp, bucketed
    completions: int       # N = B x G
    completion_slots: int  # Tc
    patch_rows: int        # vision patch rows of the batch (padded)
    batch_shards: int      # devices the rows are split over (mesh data x fsdp)
    model_shards: int      # devices each parameter is split over (fsdp x tensor)
    tensor: int = 1
    completion_chunks: int = 1  # an update micro-batch holds N / completion_chunks completions (grpo)


def breakdown(cfg, shape: Shape, *, param_bytes: int, compute_bytes: int, remat: str, vision_remat: str,
              train: bool, beta: float = 0.0, freeze_vision: bool = False, freeze_merger: bool = False,
              accumulation: int = 1, frozen_bytes: int | None = None, lora_params: int = 0) -> dict[str, int]:
    """Bytes per device of each part of a job, by the arithmetic above (0 where a part is absent).

    frozen_bytes: bytes per parameter of what never updates (the frozen towers and the reference
    params; model.frozen_dtype), None: param_bytes. accumulation: micro-batches per step.
    lora_params: LoRA adapters' parameter count (mmjax.models.lora; 0 = full fine-tuning): then
    the whole base is frozen, the adapters (float32, replicated) are what trains, the reference
    is the base itself, and the rollout holds one merged copy of the base ("merged policy")."""
    n = param_count(cfg)
    shards = shape.model_shards
    frozen_bytes = param_bytes if frozen_bytes is None else frozen_bytes
    if train and lora_params:
        adapters = lora_params * 4
        out = {"params": n * frozen_bytes // shards + adapters, "trainable params": adapters,
               "optimizer state": ADAM_MOMENTS * adapters, "gradients": adapters * (2 if accumulation > 1 else 1),
               "reference params": 0, "merged policy": n * frozen_bytes // shards}
    else:
        trainable = trainable_count(cfg, freeze_vision, freeze_merger) if train else n
        stored = trainable * param_bytes + (n - trainable) * frozen_bytes
        out = {"params": stored // shards}
    if train and not lora_params:
        out["trainable params"] = stored // shards
        out["optimizer state"] = ADAM_MOMENTS * 4 * trainable // shards
        out["gradients"] = stored // shards * (2 if accumulation > 1 else 1)  # one + the running sum
        out["reference params"] = n * frozen_bytes // shards if beta > 0 else 0
    rows_c = -(-shape.completions // shape.batch_shards) * shape.completion_slots
    rows_p = -(-shape.prompts // shape.batch_shards) * shape.prompt_slots
    out["kv cache"] = kv_bytes_per_token(cfg, compute_bytes) * (rows_c + rows_p) // shape.tensor
    if train:
        rows_c = -(-shape.completions // shape.completion_chunks // shape.batch_shards) * shape.completion_slots
        per_token = activation_bytes_per_token(cfg, remat, compute_bytes)
        prompt_kv = kv_bytes_per_token(cfg, compute_bytes)  # the prompt's keys, kept for the completions
        head = 3 * min(HEAD_CHUNK, rows_c) * cfg.text.vocab_size * 4
        vit = 0 if freeze_vision else vision_bytes_per_row(cfg, vision_remat, compute_bytes) * shape.patch_rows
        out["activations"] = per_token * (rows_c + rows_p) + prompt_kv * rows_p + head + vit
    return out


def host_bytes(*, batch_bytes: int, worker_count: int, state_bytes_per_device: int, local_devices: int,
               buffered_batches: int = 2) -> dict[str, int]:
    """Host RAM per process: the data workers' batch buffers (grain's per-worker buffer: mmjax
    assumption of 2 batches each) and the checkpointer's host copy of this process's shards of
    params and optimizer state (Orbax async saves copy them to the host before writing)."""
    return {"data workers": max(1, worker_count) * buffered_batches * batch_bytes,
            "checkpointer": state_bytes_per_device * local_devices}
