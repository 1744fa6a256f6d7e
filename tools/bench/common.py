"""Shared pieces of the tools/bench scripts: timing, the GEMM rate, the bench model pair, inputs,
and the FLOP count of a completion log-prob update.

Nothing here imports torch or transformers at module level: gpu_check.py runs where neither
is installed, and imports this module too.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Callable

import numpy as np


# ---- timing ------------------------------------------------------------------------------


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    """Seconds of `reps` calls of fn (fn must block until its result is ready)."""
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def compile_jitted(jitted, *args):
    """(compiled function, seconds to trace + compile it for these arguments).

    Compiling ahead of the first call keeps the compile time apart from the step time, and
    the compiled function cannot recompile silently inside the timed loop.
    """
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def gemm_probe(n: int = 2048, dtype: str = "float32") -> Callable[[], float]:
    """A compiled (n x n) @ (n x n) jax matmul on the default device, warmed up; each call
    times one product and returns its FLOP/s (2 n^3 FLOPs).

    The ceiling the model's own matmuls are judged against, measured in the same process
    as the benchmark (the machines are shared: an old figure would not be comparable).
    Benchmarks call it between their own timed calls, so the rate they divide by is the
    machine's at the time of the step, not a moment apart.
    """
    import jax
    import jax.numpy as jnp
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(kb, (n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x, y: x @ y)
    for _ in range(2):  # compile, then one untimed call
        f(a, b).block_until_ready()
    return lambda: 2.0 * n ** 3 / timed(lambda: f(a, b).block_until_ready(), 1)[0]


def gemm_rate(n: int = 2048, reps: int = 5, dtype: str = "float32") -> float:
    """Median FLOP/s of `reps` products of `gemm_probe`."""
    probe = gemm_probe(n, dtype)
    return median([probe() for _ in range(reps)])


# ---- the model pair and inputs -------------------------------------------------------------


def special_ids(cfg) -> list[int]:
    """Every special token id of a mmjax config (vision markers, eos, pad, bos)."""
    t = cfg.text
    eos = t.eos_token_id if isinstance(t.eos_token_id, tuple) else (t.eos_token_id,)
    ids = [cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id,
           t.pad_token_id, t.bos_token_id, *eos]
    return sorted(i for i in ids if i is not None)


def text_id_limit(cfg) -> int:
    """Random text tokens are drawn from [0, this): below every special id of the presets."""
    return min(special_ids(cfg))


def hf_config(cfg, attn: str = "sdpa"):
    """The transformers Qwen2_5_VLConfig of a mmjax config (same ids, same shapes)."""
    from transformers import Qwen2_5_VLConfig
    d = cfg.to_hf_dict()
    d.pop("architectures", None)
    d.pop("model_type", None)
    hf_cfg = Qwen2_5_VLConfig(**d)
    hf_cfg._attn_implementation = attn
    return hf_cfg


def build_hf(cfg, out_dir: str, seed: int = 0, attn: str = "sdpa"):
    """A random transformers model of `cfg` (torch init from `seed`), saved to out_dir; eval mode."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(hf_config(cfg, attn)).eval()
    model.save_pretrained(out_dir)
    return model


def build_pair(cfg, seed: int = 0, attn: str = "sdpa", **options):
    """(transformers model, mmjax model) holding the same random weights.

    The weights are made by transformers and read by mmjax's `load_hf`, so both sides run
    exactly the same model. options: `load_hf` options (attention, remat, vision_remat, ...).
    """
    from mmjax.models.qwen2_5_vl import load_hf
    with tempfile.TemporaryDirectory() as d:
        hf_model = build_hf(cfg, d, seed, attn)
        ours = load_hf(d, progress=False, **options)
    return hf_model, ours


def prompt_inputs(cfg, batch: int, image_px: int, n_text: int, seed: int = 0):
    """`batch` equal-length prompts: <vision_start> image <vision_end> then n_text text tokens.

    Each prompt holds one square image of image_px pixels (random, already patchified:
    image_px / patch_size patches a side). Returns (ids int64 [B, T], mask, pixels, grid).
    """
    patch = cfg.vision.patch_size
    if image_px % (patch * cfg.vision.spatial_merge_size):
        raise ValueError(f"image side {image_px} px must be a multiple of "
                         f"{patch * cfg.vision.spatial_merge_size} (patch x merge)")
    rng = np.random.default_rng(seed)
    side = image_px // patch
    grid = np.array([[1, side, side]] * batch, np.int64)
    n_img = side * side // cfg.vision.spatial_merge_size ** 2
    rows = [[cfg.vision_start_token_id] + [cfg.image_token_id] * n_img + [cfg.vision_end_token_id]
            + list(rng.integers(0, text_id_limit(cfg), n_text)) for _ in range(batch)]
    ids = np.array(rows, np.int64)
    pixels = rng.standard_normal((batch * side * side, cfg.vision.patch_dim)).astype(np.float32)
    return ids, np.ones_like(ids), pixels, grid


def completions(cfg, rows: int, length: int, seed: int = 1):
    """Random completion tokens int32 [rows, length] and a mask where every other row stops at 3/4."""
    rng = np.random.default_rng(seed)
    comp = rng.integers(0, text_id_limit(cfg), (rows, length)).astype(np.int32)
    mask = np.ones((rows, length), bool)
    mask[1::2, (3 * length) // 4:] = False  # rows that ended early, as in a real rollout
    return comp, mask


# ---- FLOPs of an update ---------------------------------------------------------------------


def param_groups(params, cfg) -> dict[str, int]:
    """Parameter counts by the tokens they are applied to.

    layers: decoder layers + final norm (every text token); head: the output head (completion
    tokens only: the loss needs no other logits); vision: ViT blocks + patch embedding (every
    image patch); merger: the patch merger (every merged image token); embed: the input
    embedding table (a lookup, no FLOPs; counted in `total` only).
    """
    import jax
    size = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
    lm = params["language_model"]
    embed = size(lm["embed_tokens"])
    head = embed if cfg.tie_word_embeddings else size(params["lm_head"])
    merger = size(params["visual"]["merger"])
    return {"layers": size(lm) - embed, "head": head, "vision": size(params["visual"]) - merger,
            "merger": merger, "embed": embed, "total": size(params)}


def update_flops(groups: dict[str, int], *, text_tokens: int, head_tokens: int, patches: int,
                 merged: int) -> float:
    """6 x params x tokens (forward 2, backward 4 FLOPs per parameter per token), per group.

    Attention scores and elementwise work are not counted: this is the usual 6ND
    "model FLOPs" figure, a lower bound on the work of any implementation.
    """
    return 6.0 * (groups["layers"] * text_tokens + groups["head"] * head_tokens
                  + groups["vision"] * patches + groups["merger"] * merged)


def forward_flops(groups: dict[str, int], *, text_tokens: int, head_tokens: int, patches: int,
                  merged: int) -> float:
    """2 x params x tokens: the model FLOPs of a forward pass (the first third of `update_flops`)."""
    return update_flops(groups, text_tokens=text_tokens, head_tokens=head_tokens, patches=patches,
                        merged=merged) / 3.0


def logprob_update_counts(cfg, *, prompts: int, prompt_len: int, generations: int, completion_len: int,
                          patches_per_prompt: int, shared_prompt: bool) -> dict[str, int]:
    """Tokens an update of completion log-probs processes.

    shared_prompt (mmjax): each prompt and its images run once, then the G completions over
    its cache. Otherwise (TRL / the torch reference): every row is a full prompt + completion
    forward, so prompts and images count G times; the head sees completion_len + 1 positions
    per row (logits_to_keep, as TRL asks for).
    """
    rows = prompts * generations
    merge = cfg.vision.spatial_merge_size ** 2
    copies = prompts if shared_prompt else rows
    return {"text_tokens": copies * prompt_len + rows * completion_len,
            "head_tokens": rows * (completion_len if shared_prompt else completion_len + 1),
            "patches": copies * patches_per_prompt, "merged": copies * patches_per_prompt // merge}


def fmt_params(n: float) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"
