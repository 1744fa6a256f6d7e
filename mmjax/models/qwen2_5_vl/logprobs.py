"""Per-token log-probs of given completions: the differentiable core of GRPO and SFT updates.

    logprobs, entropy = completion_logprobs(module, params, batch, completions, completion_mask,
                                            num_generations=G, temperature=1.0)

`batch` is a `mmjax.processing.model_batch` dict of B left-padded prompts; completions are
[N = B * G, Tc] token ids, row n continuing prompt n // G (the sampler's row order). The
prompt runs once: its images are encoded once, its decoder pass fills a KV cache, and the
G completions then run as one step over [Tc] tokens that attends that cache as a shared
prefix (`mmjax.models.attention_prefix`), never copied G times. Gradients flow through
both passes, so this equals a full forward of prompt + completion for every row, at 1/G
of the prompt cost.

The head runs in float32 in chunks of `chunk_rows` tokens under jax.checkpoint, so the
[N, Tc, V] float32 logits never exist at once (Qwen's vocabulary is 151,936), neither in
the forward nor in the backward pass. Logits are divided by the rollout temperature, as
TRL and verl do when recomputing log-probs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax.models.kv_cache import completion_positions, init_cache


def _apply(module, params, *args, method: str, **kw):
    return module.apply({"params": params}, *args, method=method, **kw)


def token_logprobs(hidden: jax.Array, kernel: jax.Array, tokens: jax.Array, *, temperature: float = 1.0,
                   chunk_rows: int = 1024, with_entropy: bool = False):
    """log softmax(hidden @ kernel / temperature)[tokens], float32, chunked over rows of tokens.

    hidden [..., D], kernel [D, V], tokens [...]. Returns (logprobs [...], entropy [...] or None).
    """
    lead = tokens.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    t = tokens.reshape(-1)
    rows = h.shape[0]
    chunk = max(1, min(chunk_rows, rows))
    pad = -rows % chunk
    h = jnp.pad(h, ((0, pad), (0, 0))).reshape(-1, chunk, h.shape[-1])
    t = jnp.pad(t, (0, pad)).reshape(-1, chunk)
    w = kernel.astype(jnp.float32)

    @jax.checkpoint
    def one(hc, tc):
        logits = jnp.dot(hc.astype(jnp.float32), w) / temperature
        lse = jax.nn.logsumexp(logits, axis=-1)
        lp = jnp.take_along_axis(logits, tc[:, None], axis=-1)[:, 0] - lse
        if not with_entropy:
            return lp, jnp.zeros_like(lp)
        probs = jnp.exp(logits - lse[:, None])
        return lp, lse - jnp.sum(probs * logits, axis=-1)

    _, (lp, ent) = jax.lax.scan(lambda c, xs: (c, one(*xs)), None, (h, t))
    lp = lp.reshape(-1)[:rows].reshape(lead)
    return lp, (ent.reshape(-1)[:rows].reshape(lead) if with_entropy else None)


def completion_logprobs(module, params, batch, completions: jax.Array, completion_mask: jax.Array, *,
                        positions: jax.Array | None = None, num_generations: int = 1, temperature: float = 1.0,
                        with_entropy: bool = False, chunk_rows: int = 1024):
    """float32 log-probs [N, Tc] of `completions` (0 where the mask is off), and entropy on request.

    positions: the completion tokens' M-RoPE positions [3, N, Tc] as the rollout carries them
    (`Rollout.completion_positions`); made by `completion_positions` when not given.
    """
    cfg = module.cfg.text
    g = num_generations
    ids, prompt_mask = batch["input_ids"], batch["attention_mask"].astype(bool)
    b, tp = ids.shape
    n, tc = completions.shape
    if n != b * g:
        raise ValueError(f"{n} completion rows for {b} prompts x num_generations={g}")
    x = _apply(module, params, batch, method="embed_batch")
    hidden_p, cache, _ = _apply(module, params, x, batch["positions"], prompt_mask,
                                init_cache(cfg, b, tp, module.dtype), 0, method="decode")

    xc = _apply(module, params, completions, method="embed")
    if positions is None:
        positions = completion_positions(batch, tc, g)
    hidden_c, _, _ = _apply(module, params, xc, positions, jnp.ones((n, tc), bool), prefix=(cache, prompt_mask),
                            method="decode")
    # Token j is predicted by the state before it: the prompt's last one for j = 0.
    hidden = jnp.concatenate([jnp.repeat(hidden_p[:, -1:], g, axis=0), hidden_c[:, :-1]], axis=1)
    kernel = _apply(module, params, method="head_kernel")
    lp, ent = token_logprobs(hidden, kernel, completions, temperature=temperature, chunk_rows=chunk_rows,
                             with_entropy=with_entropy)
    mask = completion_mask.astype(bool)
    lp = jnp.where(mask, lp, 0.0)
    return lp, (jnp.where(mask, ent, 0.0) if with_entropy else None)


def packed_completion_logprobs(module, params, batch, tokens: jax.Array, positions: jax.Array, segments: jax.Array,
                               slot: jax.Array, completion_mask: jax.Array, *, row_prompt: jax.Array | None = None,
                               temperature: float = 1.0, with_entropy: bool = False, chunk_rows: int = 1024):
    """`completion_logprobs` of completions packed by `mmjax.rl.packing`, in the padded layout.

    tokens [B * R, W], positions [3, B * R, W], segments [B * R, W] (0 = empty slot): R packed
    rows per prompt, each holding whole completions of that prompt; slot [N, Tc]: the flat
    packed index (row * W + slot) of each completion token, -1 past its end. The prompt runs
    once as in `completion_logprobs`; the packed rows attend its cache as a shared prefix and,
    within a row, each completion only its own earlier tokens. row_prompt int [rows]: pooled rows
    (`pack(pooled=True)`), row k attending prompt row_prompt[k] instead of R rows a prompt in order.
    Returns float32 log-probs (and entropy) [N, Tc], 0 where completion_mask is off: the same
    numbers as the padded call.
    """
    cfg = module.cfg.text
    ids, prompt_mask = batch["input_ids"], batch["attention_mask"].astype(bool)
    b, tp = ids.shape
    rows, w = tokens.shape
    if row_prompt is None and rows % b:
        raise ValueError(f"{rows} packed rows for {b} prompts: each prompt needs the same number")
    x = _apply(module, params, batch, method="embed_batch")
    hidden_p, cache, _ = _apply(module, params, x, batch["positions"], prompt_mask,
                                init_cache(cfg, b, tp, module.dtype), 0, method="decode")
    xc = _apply(module, params, tokens, method="embed")
    prefix = (cache, prompt_mask) if row_prompt is None else (cache, prompt_mask, row_prompt)
    hidden_c, _, _ = _apply(module, params, xc, positions, segments > 0, prefix=prefix,
                            segments=segments, method="decode")
    # A token is predicted by the state before it in its completion: the prompt's last for the
    # first token of a segment, else the packed row's previous slot.
    first = segments != jnp.pad(segments, ((0, 0), (1, 0)))[:, :-1]
    previous = jnp.pad(hidden_c, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    prompt_last = jnp.repeat(hidden_p[:, -1:], rows // b, axis=0) if row_prompt is None else hidden_p[row_prompt, -1:]
    hidden = jnp.where(first[..., None], prompt_last, previous)
    kernel = _apply(module, params, method="head_kernel")
    lp, ent = token_logprobs(hidden, kernel, tokens, temperature=temperature, chunk_rows=chunk_rows,
                             with_entropy=with_entropy)
    mask = completion_mask.astype(bool) & (slot >= 0)

    def unpack(packed):
        return jnp.where(mask, packed.reshape(-1)[jnp.maximum(slot, 0)], 0.0)

    return unpack(lp), (unpack(ent) if with_entropy else None)
