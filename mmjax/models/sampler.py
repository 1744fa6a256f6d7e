"""Rollouts: encode images once, prefill each prompt once, decode G completions per prompt.

    rollout = generate(module, params, model.prepare(...), max_new_tokens=64,
                       sampling=SamplingParams(temperature=1.0), num_generations=8)

Three jitted pieces, each compiled for a handful of shapes:
  * `_encode`: the vision tower, its output padded to a bucketed number of tokens;
  * `_prefill`: the prompt (left-padded to a bucketed length) through the decoder once, in
    chunks of `prefill_chunk` tokens (attention buffers [chunk, T], not [T, T]); the first
    token of every completion. G > 1 completions read the prompt's KV cache as a shared
    prefix instead of G copies (the cache layouts: `generate`);
  * `_decode`: a `lax.while_loop` over the remaining tokens with the loop state donated,
    stopping early once every row has produced an end-of-sequence token.

A generated token's M-RoPE position comes from `completion_positions`, for the sampler and
the learner alike, and the Rollout carries it with the bucketed prompt arrays so a learner
derives nothing again. A row's samples depend on the seed and its row id alone, not on the
other rows; greedy decoding uses no randomness. The keys and capture="cmab": `generate`;
README "Sampling".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.models import capture as capture_lib
from mmjax.models.kv_cache import CACHE_SLOT_AXIS, completion_positions, init_cache
from mmjax.models.sampling import SamplingParams, choose
from mmjax.processing.buckets import bucket_size, left_pad

CAPTURE_KINDS = ("cmab",)
# Prompts up to this many slots prefill in one piece. Measured with the bench model on CPU
# (a 320-slot prompt): one piece 762 ms at batch 8 and 7.7 s at batch 64, chunks of 64
# (the old rule, the gcd of 320 and 256) 868 ms and 8.3 s. Longer prompts split into
# equal chunks of at most this.
PREFILL_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class Rollout:
    """Completions of a batch, row n = prompt n // G, completion n % G (numpy arrays)."""
    tokens: np.ndarray             # int32 [N, max_new]; pad_token_id after the end
    logprobs: np.ndarray           # float32 [N, max_new]; policy log-prob at temperature 1, 0 after the end
    sampling_logprobs: np.ndarray  # float32 [N, max_new]; under the distribution sampled from (0 if greedy)
    mask: np.ndarray               # bool [N, max_new]; True on completion tokens (incl. the stop token)
    lengths: np.ndarray            # int32 [N]
    stopped: np.ndarray            # bool [N]; True if the row ended on an end-of-sequence token
    prompt_index: np.ndarray       # int32 [N]
    num_generations: int
    # What a learner needs to score the completions without deriving anything again:
    prompt_ids: np.ndarray | None = None            # int32 [B, Tp] the bucketed, left-padded prompts
    prompt_mask: np.ndarray | None = None           # bool [B, Tp]
    prompt_positions: np.ndarray | None = None      # int32 [3, B, Tp]
    completion_positions: np.ndarray | None = None  # int32 [3, N, max_new]
    attention_masses: np.ndarray | None = None  # float32 [N, max_new, layers, heads, groups]
    group_sizes: np.ndarray | None = None       # float32 [N, groups]: prompt positions per group

    def completion_ids(self) -> list[list[int]]:
        """Each row's completion token ids without its stop token: what a reward reads, decoded.

        The stop token (e.g. <|im_end|>) ends the answer but is not part of it; decoded, it
        would break checks that match the whole text (TRL decodes with skip_special_tokens).
        """
        return [row[:n - 1 if stopped else n].tolist()
                for row, n, stopped in zip(self.tokens, self.lengths, self.stopped)]

    def prompt_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """`batch` (the prompts' model batch) with the bucketed prompt arrays this rollout used."""
        return {**batch, "input_ids": self.prompt_ids, "attention_mask": self.prompt_mask,
                "positions": self.prompt_positions}


# ---- jitted pieces ------------------------------------------------------------------------

def _apply(module, params, *args, method: str, **kw):
    return module.apply({"params": params}, *args, method=method, **kw)


def _in_compute_dtype(module, params):
    """params cast to the module's compute dtype, the float32 output head kept as stored.

    The layers cast each weight to the compute dtype where they use it, so the results are
    identical; what changes is what moves: weights sharded over fsdp are gathered for every
    decode step (XLA hoists the gathers out of the loop and keeps a whole copy of the model per
    device: 33 GB for the 7B in float32, as mmjax.jobs.plan found), so an accelerator gathers and
    keeps bfloat16 instead. XLA:CPU upcasts bfloat16 collectives to float32, so a CPU plan
    does not show the saving."""
    dtype = jnp.dtype(module.dtype)
    head = ("language_model", "embed_tokens") if module.cfg.tie_word_embeddings else ("lm_head",)

    def cast(path, p):
        keys = tuple(getattr(k, "key", None) for k in path)
        keep = keys[:len(head)] == head or not jnp.issubdtype(p.dtype, jnp.floating) or p.dtype == dtype
        return p if keep else p.astype(dtype)

    return jax.tree_util.tree_map_with_path(cast, params)


@functools.partial(jax.jit, static_argnames=("module", "rows"))
def _encode(module, params, vision, rows: int):
    embeds = _apply(module, params, vision, method="encode_vision")
    return jnp.pad(embeds, ((0, rows - embeds.shape[0]), (0, 0)))


def _repeat(x: jax.Array, g: int) -> jax.Array:
    return x if g == 1 else jnp.repeat(x, g, axis=0)


def _step_keys(row_keys: jax.Array, step) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)


def _is_stop(tokens: jax.Array, eos: jax.Array) -> jax.Array:
    return (tokens[:, None] == eos[None, :]).any(axis=-1)


def chunk_length(length: int, chunk: int) -> int:
    """The prefill's chunk for a prompt of `length` slots: the whole prompt up to `chunk`,
    else the largest divisor of `length` not above `chunk` (a 640-slot prompt in chunks of
    at most 512 -> 2 x 320), as every chunk has one shape."""
    if length <= chunk:
        return length
    return max(c for c in range(1, chunk + 1) if length % c == 0)


def _prefill_cache(module, params, x, positions, prompt_mask, cache, chunk: int):
    """Run the prompt through the decoder in chunks of `chunk` tokens, filling the cache.

    Each chunk attends the cache so far (causal in slot space), so attention buffers are
    [chunk, T] rather than [T, T]. Returns the last position's hidden state [B, D] and the cache.
    """
    b, t, d = x.shape
    c = chunk_length(t, chunk)
    if c == t:
        hidden, cache, _ = _apply(module, params, x, positions, prompt_mask, cache, 0, method="decode")
        return hidden[:, -1], cache
    n = t // c
    xs = x.reshape(b, n, c, d).swapaxes(0, 1)
    ps = positions.reshape(3, b, n, c).transpose(2, 0, 1, 3)

    def body(cache, chunk_in):
        i, xc, pc = chunk_in
        hidden, cache, _ = _apply(module, params, xc, pc, prompt_mask, cache, i * c, method="decode")
        return cache, hidden[:, -1]

    cache, last = jax.lax.scan(body, cache, (jnp.arange(n), xs, ps))
    return last[-1], cache


@functools.partial(jax.jit, static_argnames=("module", "sampling", "num_generations", "max_new_tokens",
                                             "prefill_chunk"))
def _prefill(module, params, input_ids, positions, prompt_mask, image_embeds, video_embeds, key_groups,
             new_positions, allowed, eos, pad_id, seed, row_seeds=None, *, sampling: SamplingParams,
             num_generations: int, max_new_tokens: int, prefill_chunk: int = PREFILL_CHUNK):
    b, t = input_ids.shape
    g, n = num_generations, input_ids.shape[0] * num_generations
    cfg = module.cfg.text
    params = _in_compute_dtype(module, params)
    x = _apply(module, params, input_ids, image_embeds, video_embeds, method="embed")
    last_hidden, cache = _prefill_cache(module, params, x, positions, prompt_mask,
                                        init_cache(cfg, b, t, module.dtype), prefill_chunk)
    if key_groups is not None:
        # The y_1 row is the last prompt position's query: replay that position as a one-token
        # step over the filled cache with capture on (its cache write is identical, dropped).
        _, _, masses = _apply(module, params, x[:, -1:], positions[..., -1:], prompt_mask, cache, t - 1,
                              key_groups, method="decode")
    logits = _repeat(_apply(module, params, last_hidden, method="logits"), g)

    row_ids = jnp.arange(n, dtype=jnp.uint32) if row_seeds is None else row_seeds
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), row_ids)
    tok, lp, slp = choose(logits, _step_keys(row_keys, 0), sampling, allowed)

    def widen(a, slot_axis=1):  # room for the new tokens' slots, repeated for the G completions
        return _repeat(jnp.pad(a, [(0, max_new_tokens if i == slot_axis else 0) for i in range(a.ndim)]), g)

    # G > 1 completions read their prompt's cache as a shared prefix (never copied G times) and
    # write their tokens to a cache of their own. Capture (and G = 1) keep one cache per row:
    # the masses are reduced over its slots.
    shared = g > 1 and key_groups is None
    if shared:
        row_cache, prefix = init_cache(cfg, n, max_new_tokens, module.dtype), (cache, prompt_mask)
        key_valid, first_slot = jnp.ones((n, max_new_tokens), bool), 0
    else:
        row_cache, prefix = [{k: widen(v, CACHE_SLOT_AXIS) for k, v in layer.items()} for layer in cache], None
        key_valid = _repeat(jnp.concatenate([prompt_mask, jnp.ones((b, max_new_tokens), bool)], axis=1), g)
        first_slot = t
    state = dict(
        step=jnp.asarray(1, jnp.int32),
        cache=row_cache,
        tokens=jnp.full((n, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(tok),
        logprobs=jnp.zeros((n, max_new_tokens), jnp.float32).at[:, 0].set(lp),
        sampling_logprobs=jnp.zeros((n, max_new_tokens), jnp.float32).at[:, 0].set(slp),
        mask=jnp.zeros((n, max_new_tokens), bool).at[:, 0].set(True),
        done=_is_stop(tok, eos),
    )
    consts = dict(
        key_valid=key_valid,
        prefix=prefix,
        new_positions=new_positions,
        row_keys=row_keys,
        first_slot=jnp.asarray(first_slot, jnp.int32),
        allowed=allowed,
        eos=eos,
        pad_id=pad_id,
        key_groups=None,
    )
    if key_groups is not None:
        last = jnp.transpose(masses[:, :, -1], (1, 0, 2, 3))  # [B, L, H, G]
        buf = jnp.zeros((n, max_new_tokens) + last.shape[1:], jnp.float32)
        state["masses"] = buf.at[:, 0].set(_repeat(last, g))
        consts["key_groups"] = widen(key_groups)
    return state, consts


@functools.partial(jax.jit, static_argnames=("module", "sampling"), donate_argnames=("state",))
def _decode(module, params, state, consts, *, sampling: SamplingParams):
    n, max_new = state["tokens"].shape
    params = _in_compute_dtype(module, params)

    def cond(s):
        return (s["step"] < max_new) & ~jnp.all(s["done"])

    def body(s):
        i = s["step"]
        prev = jax.lax.dynamic_slice_in_dim(s["tokens"], i - 1, 1, axis=1)
        x = _apply(module, params, prev, method="embed")
        pos = jax.lax.dynamic_slice_in_dim(consts["new_positions"], i - 1, 1, axis=2)
        hidden, cache, masses = _apply(module, params, x, pos, consts["key_valid"], s["cache"],
                                       consts["first_slot"] + i - 1, consts["key_groups"], prefix=consts["prefix"],
                                       method="decode")
        logits = _apply(module, params, hidden[:, -1], method="logits")
        tok, lp, slp = choose(logits, _step_keys(consts["row_keys"], i), sampling, consts["allowed"])
        live = ~s["done"]
        put = lambda buf, v: jax.lax.dynamic_update_index_in_dim(buf, v, i, axis=1)
        new = dict(
            step=i + 1,
            cache=cache,
            tokens=put(s["tokens"], jnp.where(live, tok, consts["pad_id"])),
            logprobs=put(s["logprobs"], jnp.where(live, lp, 0.0)),
            sampling_logprobs=put(s["sampling_logprobs"], jnp.where(live, slp, 0.0)),
            mask=put(s["mask"], live),
            done=s["done"] | _is_stop(tok, consts["eos"]),
        )
        if "masses" in s:
            row = jnp.transpose(masses[:, :, 0], (1, 0, 2, 3))  # [N, L, H, G]
            new["masses"] = put(s["masses"], jnp.where(live[:, None, None, None], row, 0.0))
        return new

    return jax.lax.while_loop(cond, body, state)


# ---- host side ------------------------------------------------------------------------------

def as_token_ids(ids: int | Sequence[int] | None) -> tuple[int, ...]:
    if ids is None:
        return ()
    return (int(ids),) if np.isscalar(ids) else tuple(int(i) for i in ids)


def _vision(module, params, vision, min_rows: int = 16):
    """Merged visual embeddings of (pixels, layout), padded to a bucketed row count (or None)."""
    if vision is None:
        return None
    merge = module.cfg.vision.spatial_merge_size ** 2
    return _encode(module, params, vision, bucket_size(vision["pixel_values"].shape[0] // merge, min_rows))


def allowed_mask(allowed_token_ids: Sequence[int] | None, vocab_size: int) -> np.ndarray | None:
    if allowed_token_ids is None:
        return None
    ids = np.asarray(list(allowed_token_ids), np.int64)
    if ids.size == 0 or ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"allowed_token_ids must be a non-empty set of ids in [0, {vocab_size}); got "
                         f"{ids.tolist()[:20]}")
    mask = np.zeros(vocab_size, bool)
    mask[ids] = True
    return mask


def generate(module, params, batch: dict[str, Any], *, max_new_tokens: int,
             sampling: SamplingParams = SamplingParams(), num_generations: int = 1, seed: int = 0,
             eos_token_ids: int | Sequence[int] | None = None, pad_token_id: int = 0,
             allowed_token_ids: Sequence[int] | None = None, capture: str | None = None,
             min_bucket: int = 16, bucket_lengths: Sequence[int] | None = None,
             prefill_chunk: int = PREFILL_CHUNK, mesh=None,
             row_seeds: Sequence[int] | np.ndarray | None = None) -> Rollout:
    """Sample `num_generations` completions for every prompt of a prepared batch.

    batch: the dict of `Qwen2_5_VL.prepare` (input_ids, positions, attention_mask, image, video,
    rope_deltas), prompts left-padded. Returns a `Rollout` of B * num_generations rows.
    mesh: when given, the prompt rows are split over the mesh's batch axes (data parallel
    rollouts; the row count must divide) and the cache follows them; params may be sharded.
    With several processes, each passes its own prompts (the same length on all: see
    `mmjax.sharding.process_batch`) and gets back its own rows; row keys use global row ids.
    row_seeds: optional ints in [0, 2^32), one per completion row (B * num_generations, prompt
    major): row n's key is fold_in(key(seed), row_seeds[n]) instead of fold_in(key(seed), n),
    so its samples follow the caller's id for it, not its place in this batch.
    bucket_lengths: the prompt-length buckets the batch was padded to (the pipeline's
    `config.data.bucket_lengths`); None uses `mmjax.processing.buckets`' rule. A batch already
    at one of them is not padded again.

    Randomness: row n (prompt n // G, completion n % G) draws its token at step i with
    fold_in(fold_in(key(seed), n), i) (n replaced by row_seeds[n] when given), so a row's
    samples do not depend on the other rows, and greedy decoding uses no randomness at all.

    Caches: with G > 1 completions per prompt, they read the prompt's KV cache as a shared
    prefix (`mmjax.models.attention_prefix`: the prompt's keys are stored and read once per
    prompt, not G times) and write their tokens to a cache of max_new_tokens slots of their
    own; with G = 1 or capture, each row's cache is the prompt's padded to prompt +
    max_new_tokens slots.

    capture="cmab": the attention masses of every generated token's query row on the key
    groups of `mmjax.models.capture` are returned ([N, max_new, layers, heads, groups]); they
    are reduced inside the attention, never stored as maps. Row t of a completion is the
    query that produced token t: the last prompt position for t = 1 (from the prefill), the
    previous generated token afterwards.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1; got {num_generations}")
    if prefill_chunk < 1 or prefill_chunk & (prefill_chunk - 1):
        raise ValueError(f"prefill_chunk must be a power of two; got {prefill_chunk}")
    if capture is not None and capture not in CAPTURE_KINDS:
        raise ValueError(f"capture must be None or one of {CAPTURE_KINDS}; got {capture!r}")
    cfg = module.cfg
    ids = np.asarray(batch["input_ids"], np.int32)
    mask = np.asarray(batch["attention_mask"], bool)
    if (mask[:, :-1] & ~mask[:, 1:]).any():
        rows = np.flatnonzero((mask[:, :-1] & ~mask[:, 1:]).any(axis=1)).tolist()
        raise ValueError(f"prompts must be left-padded for generation; rows {rows} have padding on the right")
    b, t = ids.shape
    if row_seeds is not None:
        row_seeds = np.asarray(row_seeds)
        if row_seeds.shape != (b * num_generations,) or not np.issubdtype(row_seeds.dtype, np.integer) or (
                row_seeds.size and (row_seeds.min() < 0 or row_seeds.max() >= 2 ** 32)):
            raise ValueError(f"row_seeds must be {b * num_generations} ints in [0, 2^32) (prompts {b} x "
                             f"num_generations {num_generations}); got shape {row_seeds.shape}, "
                             f"dtype {row_seeds.dtype}")
        row_seeds = row_seeds.astype(np.uint32)
    try:
        length = bucket_size(t, min_bucket, sizes=bucket_lengths)
    except ValueError as e:
        raise ValueError(f"generate: prompts of {t} tokens do not fit bucket_lengths: {e}") from None
    ids_p = left_pad(ids, length, pad_token_id)
    mask_p = left_pad(mask, length, False)
    positions_p = left_pad(np.asarray(batch["positions"], np.int32), length, 0)
    new_positions = np.asarray(completion_positions(
        {"attention_mask": mask, "rope_deltas": np.asarray(batch["rope_deltas"])}, max_new_tokens, num_generations))
    groups = None
    if capture is not None:
        groups = capture_lib.key_groups(ids_p, mask_p, cfg.image_token_id, cfg.video_token_id)
    prompt_rows = (ids_p, mask_p, positions_p, new_positions, groups, row_seeds)
    if mesh is not None:  # several processes: each passes its own prompts, the arrays are global
        from mmjax.sharding import global_rows, host_local
        place = lambda a, axis=0: None if a is None else global_rows(a, mesh, axis)  # noqa: E731
        prompt_rows = (place(ids_p), place(mask_p), place(positions_p, 1), place(new_positions, 1), place(groups),
                       place(row_seeds))

    d_ids, d_mask, d_positions, d_new_positions, d_groups, d_row_seeds = prompt_rows
    from mmjax.sharding import maybe_activation_rules
    with maybe_activation_rules(mesh):  # rows and their cache split over the batch axes in every layer
        state, consts = _prefill(
            module, params, d_ids, d_positions, d_mask, _vision(module, params, batch.get("image")),
            _vision(module, params, batch.get("video")), d_groups, d_new_positions,
            allowed_mask(allowed_token_ids, cfg.text.vocab_size), np.asarray(as_token_ids(eos_token_ids), np.int32),
            np.int32(pad_token_id), np.uint32(seed), d_row_seeds, sampling=sampling, num_generations=num_generations,
            max_new_tokens=max_new_tokens, prefill_chunk=prefill_chunk)
        state = _decode(module, params, state, consts, sampling=sampling)
    del state["cache"]  # stays on the device (it aliases the donated input); never copied back
    state = jax.device_get(state) if mesh is None else host_local(state, mesh)  # this process's rows

    g = num_generations
    out_mask = np.asarray(state["mask"])
    return Rollout(
        tokens=np.asarray(state["tokens"]),
        logprobs=np.asarray(state["logprobs"]),
        sampling_logprobs=np.asarray(state["sampling_logprobs"]),
        mask=out_mask,
        lengths=out_mask.sum(axis=1).astype(np.int32),
        stopped=np.asarray(state["done"]),
        prompt_index=np.repeat(np.arange(b, dtype=np.int32), g),
        num_generations=g,
        prompt_ids=ids_p, prompt_mask=mask_p, prompt_positions=positions_p, completion_positions=new_positions,
        attention_masses=None if capture is None else np.asarray(state["masses"]),
        group_sizes=None if capture is None else np.repeat(groups.sum(axis=1), g, axis=0),
    )
