"""GRPO as a Trainer objective: rollouts, rewards, advantages, old and reference log-probs.

    prepare:  each pipeline batch -> sampler (G completions per prompt, images encoded once)
              -> rewards -> [online filtering: draw more batches] -> advantages over the
              whole step -> micro-batches on the devices (+ old / reference log-probs)
    loss:     mmjax.rl.update.GRPOLoss, num_iterations updates per example

Nothing here recomputes what the batch or the rollout carries: positions, vision tables,
bucketed prompt arrays and completion positions travel as data. Several processes: each
samples and scores its own prompts (a group never spans processes); what needs every row
(advantages with scale_rewards="batch", online filtering's counts, the metrics) is computed
from all processes' host arrays (`sharding.allgather_arrays`), so every process takes the
same decisions and the numbers equal one process's on the same global batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import sharding
from mmjax.config_help import help_text
from mmjax.data.batching import arrays
from mmjax.models import lora as lora_lib
from mmjax.models import sampler
from mmjax.rl import advantages as advantages_lib
from mmjax.rl import grpo as grpo_lib
from mmjax.rl import packing, padding
from mmjax.rl.update import GRPOLoss, GRPOMicroBatch, rollout_logprobs
from mmjax.train.optim import cast_floating

RewardFn = Callable[..., Any]  # rewards.combine(...): (texts, targets, **columns) -> RewardOutput


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How GRPO samples (the algorithm is GRPOConfig, the loop TrainConfig)."""
    seed: int = dataclasses.field(default=0, metadata=help_text("sampling keys: fold_in(seed, step, micro-batch)"))
    filter_zero_std_groups: bool = dataclasses.field(default=False, metadata=help_text(
        "online filtering: drop groups whose rewards all match and draw more micro-batches (DAPO)"))
    filter_max_retries: int = dataclasses.field(default=2, metadata=help_text(
        "extra micro-batches a step may draw to refill filtered groups"))
    allowed_token_ids: tuple[int, ...] | None = dataclasses.field(default=None, metadata=help_text(
        "restrict sampling to these token ids (None: the whole vocabulary)"))


@dataclasses.dataclass
class ScoredRollout:
    """What one pipeline batch became on the host: its rollout, texts and rewards."""
    meta: dict[str, list]          # host metadata per prompt (solution, task, ...)
    rollout: sampler.Rollout
    texts: list[str]
    rewards: np.ndarray            # [N] total reward per completion
    per_function: dict[str, np.ndarray]
    reward_metrics: dict[str, float]
    keep: np.ndarray               # [N] bool: the row takes part in the update (online filtering)


@flax.struct.dataclass
class GRPOExample:
    """One optimizer step of GRPO: the device micro-batches and their host rollouts."""
    micro_batches: tuple[GRPOMicroBatch, ...]
    rollouts: tuple[ScoredRollout, ...] = flax.struct.field(pytree_node=False)


class GRPOObjective:
    """GRPO (`mmjax.train.trainer.Objective`) for `module`, sampling with the trainer's params.

    reward: texts, targets, task=... -> RewardOutput (`mmjax.rewards.combine`).
    decode: token ids -> text (the tokenizer's decode).
    bucket_lengths: the prompt-length buckets the pipeline pads to (config.data.bucket_lengths),
    so the sampler keeps its prompts as they come; None: `mmjax.processing.buckets`' rule.
    reference_dtype: the stored dtype of the reference params (beta > 0); None: the policy's.
    feedback: the data pipeline's stage that the step's rollouts update (online difficulty,
    adaptive jigsaw; mmjax.data.feedback), or None.
    """

    name = "GRPO"
    cumulative = ("num_tokens",)  # TRL's num_tokens counts the whole run

    def __init__(self, module, reward: RewardFn, decode: Callable[[Sequence[int]], str], *,
                 grpo: grpo_lib.GRPOConfig, rollout: RolloutConfig, gradient_accumulation_steps: int,
                 eos_token_ids: Sequence[int], pad_token_id: int, mesh=None,
                 bucket_lengths: Sequence[int] | None = None, reference_dtype=None, feedback=None, lora=None):
        self.module, self.reward, self.decode = module, reward, decode
        self.grpo, self.cfg, self.accumulation = grpo, rollout, gradient_accumulation_steps
        self.eos, self.pad, self.mesh = tuple(eos_token_ids), int(pad_token_id), mesh
        self.bucket_lengths = tuple(bucket_lengths) if bucket_lengths else None
        # LoRA (a LoraSpec): the loss applies the adapters on the frozen base (the trainer joins them);
        # the rollouts and the old log-probs run the merged policy on the plain module (no adapter
        # matmuls a token), and the reference is the base itself (adapters off: no second copy).
        self.lora, self.base, self._merge = lora, None, None
        self.loss_fn = GRPOLoss(module if lora is None else lora_lib.wrap(module, lora), grpo)
        self.updates_per_example = grpo.num_iterations
        self.sampling = sampler.SamplingParams(grpo.temperature, grpo.top_p, grpo.top_k)
        # Old log-probs come from the sampler when they are the policy's own at the training
        # temperature; otherwise they are recomputed once before the first update.
        self.recompute_old = grpo.num_iterations > 1 or grpo.temperature != 1.0
        self._logprobs = jax.jit(functools.partial(rollout_logprobs, module, num_generations=grpo.completions_per_chunk,
                                                   temperature=grpo.temperature))
        self.ref_params, self.reference_dtype, self.feedback = None, reference_dtype, feedback

    def start(self, params) -> None:
        # The reference policy is the starting point (the same after a resume); beta = 0 keeps
        # none. The updates donate the params' buffers, so it must be a copy. It never updates:
        # bfloat16 storage (reference_dtype) halves it, exactly so from a bfloat16 checkpoint.
        if self.lora is not None:  # `params` is the frozen base: never donated, never changed
            self.base = params
            # The merged policy is laid out as the base (FSDP / tensor shards), never left to propagation.
            placed = all(isinstance(x, jax.Array) for x in jax.tree.leaves(params))
            self._merge = jax.jit(functools.partial(lora_lib.merged, spec=self.lora),
                                  out_shardings=jax.tree.map(lambda x: x.sharding, params) if placed else None)
        if self.grpo.beta <= 0:
            self.ref_params = None
        elif self.lora is not None:
            self.ref_params = params
        elif self.reference_dtype is None:
            self.ref_params = jax.tree.map(jnp.copy, params)
        else:
            self.ref_params = jax.tree.map(lambda p: jnp.copy(cast_floating(p, self.reference_dtype)), params)

    # ---- prepare: in the order it runs ----------------------------------------------------

    def prepare(self, params, batches: list[dict], step: int, more: Callable[[], dict]) -> GRPOExample:
        if self.lora is not None:  # params: the adapters; the policy is the base with them folded in
            params = self._merge(self.base, params)
        scored, prompts = self._rollouts(params, batches, step, more)     # sample + score
        if self.feedback is not None:                                      # the next draws' state
            self.feedback.observe(self._observed(scored), self.grpo.num_generations, step)
        advantages = self._advantages(scored)                              # whole step
        micros = tuple(micro for s, p, a in zip(scored, prompts, advantages)  # + old / ref log-probs
                       for micro in self._on_devices(params, s, p, a))
        return GRPOExample(micro_batches=micros, rollouts=tuple(scored))

    def _rollouts(self, params, batches: list[dict], step: int, more: Callable[[], dict]):
        """Sample and score the step's batches; with online filtering, draw up to
        `filter_max_retries` more until the kept groups refill the step."""
        cfg, g, base = self.cfg, self.grpo.num_generations, self.accumulation
        limit = base + (cfg.filter_max_retries if cfg.filter_zero_std_groups else 0)
        scored, prompts, kept_groups, wanted = [], [], 0, 0
        while len(scored) < limit:
            if len(scored) >= base and (not cfg.filter_zero_std_groups or kept_groups >= wanted):
                break
            batch = batches[len(scored)] if len(scored) < len(batches) else more()
            s, prompt_batch = self._rollout(params, batch, seed=self._sampling_seed(step, len(scored)))
            groups = s.rewards.reshape(-1, g)
            if cfg.filter_zero_std_groups:
                signal = ~np.all(groups == groups[:, :1], axis=1)
                s.keep = np.repeat(signal, g)
                # Counted over all processes, so all of them draw the same number of micro-batches.
                counts = _gathered({"kept": np.asarray([signal.sum(), len(signal)])})["kept"].reshape(-1, 2)
                kept_groups += int(counts[:, 0].sum())
                wanted = wanted or base * int(counts[:, 1].sum())
            scored.append(s)
            prompts.append(prompt_batch)
        return scored, prompts

    def _sampling_seed(self, step: int, micro_batch: int) -> int:
        """The sampler's seed for a micro-batch: a function of (seed, step, micro-batch) only,
        so a resumed run draws the same completions as one that never stopped."""
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.cfg.seed), step), micro_batch)
        return int(jax.random.randint(key, (), 0, 2**31 - 1))

    def _rollout(self, params, batch: dict[str, Any], seed: int) -> tuple[ScoredRollout, dict]:
        # Several processes: prompts padded to one length, one vision table for all processes.
        device_batch = sharding.process_batch(arrays(batch), self.pad)
        if self.mesh is not None:  # the vision tables once on the devices, for every pass over them
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            device_batch.update({k: jax.device_put(device_batch[k], replicated)
                                 for k in ("image", "video") if device_batch.get(k) is not None})
        rollout = sampler.generate(
            self.module, params, device_batch, max_new_tokens=self.grpo.max_completion_length,
            sampling=self.sampling, num_generations=self.grpo.num_generations, seed=seed,
            eos_token_ids=self.eos, pad_token_id=self.pad, allowed_token_ids=self.cfg.allowed_token_ids,
            mesh=self.mesh, bucket_lengths=self.bucket_lengths)
        texts = [self.decode(ids) for ids in rollout.completion_ids()]  # the stop token is not text
        g = self.grpo.num_generations
        meta = batch["meta"]
        targets = [s for s in meta["solution"] for _ in range(g)]
        tasks = [t for t in meta["task"] for _ in range(g)]
        out = self.reward(texts, targets, task=tasks)
        scored = ScoredRollout(meta=meta, rollout=rollout, texts=texts, rewards=np.asarray(out.total, np.float32),
                               per_function={k: np.asarray(v, np.float32) for k, v in out.per_function.items()},
                               reward_metrics=dict(out.metrics), keep=np.ones(len(texts), bool))
        return scored, rollout.prompt_batch(device_batch)

    def _observed(self, scored: list[ScoredRollout]) -> dict[str, np.ndarray]:
        """Every process's prompts (record keys) and rewards of the step, filtered groups included
        (a group whose rewards all match is the evidence that its row is solved or unsolved)."""
        return _gathered({
            "index": np.concatenate([np.asarray(s.meta["index"], np.int64) for s in scored]),
            "epoch": np.concatenate([np.asarray(s.meta["epoch"], np.int64) for s in scored]),
            "rewards": np.concatenate([s.rewards for s in scored]),
            **{f"fn/{name}": np.concatenate([s.per_function[name] for s in scored])
               for name in scored[0].per_function}})

    def _advantages(self, scored: list[ScoredRollout]) -> list[np.ndarray]:
        """Advantages over the whole step (so scale_rewards="batch" sees every micro-batch) and
        over all processes' rows; each process keeps its own rows'."""
        local = np.concatenate([s.rewards for s in scored])
        everyone = sharding.allgather_arrays({"rewards": local})
        rewards = jnp.asarray(np.concatenate([p["rewards"] for p in everyone]))
        adv = np.asarray(grpo_lib.advantages(self.grpo, rewards))
        offset = sum(len(p["rewards"]) for p in everyone[:jax.process_index()])
        out = []
        for s in scored:
            out.append(adv[offset:offset + len(s.rewards)])
            offset += len(s.rewards)
        return out

    def _on_devices(self, params, s: ScoredRollout, prompt_batch: dict,
                    advantages: np.ndarray) -> list[GRPOMicroBatch]:
        """The rollout's update micro-batches: one, or one per chunk of each prompt's completions
        (grpo.completion_chunks), every chunk with the whole prompt batch."""
        r = s.rollout
        mask = r.mask & s.keep[:, None]
        if self.grpo.mask_truncated_completions:
            mask = mask & r.stopped[:, None]
        rows = lambda x, axis=0: _rows(x, self.mesh, axis)  # noqa: E731
        batch = {k: rows(v, sharding.BATCH_AXIS[k]) if k in sharding.BATCH_AXIS else v
                 for k, v in prompt_batch.items()}
        micros = []
        for chunk, w in self._chunks(r):
            # Every kept row counts in the loss's denominator, truncated ones included (TRL divides
            # by all rows: masking a truncated row zeroes its tokens, not its row).
            micro = GRPOMicroBatch(
                batch=batch, tokens=rows(r.tokens[chunk, :w]), mask=rows(mask[chunk, :w]),
                positions=rows(r.completion_positions[:, chunk, :w], 1), sampler_logp=rows(r.logprobs[chunk, :w]),
                advantages=rows(advantages[chunk]), row_mask=rows(s.keep[chunk]),
                packed=self._packed(r, chunk) if self.grpo.update_layout in ("packed", "auto") else None)
            with sharding.maybe_activation_rules(self.mesh):
                old = self._logprobs(params, micro) if self.recompute_old else micro.sampler_logp
                ref = self._logprobs(self.ref_params, micro) if self.ref_params is not None else None
            micros.append(micro.replace(old_logp=old, ref_logp=ref))
        return micros

    def _chunks(self, r: sampler.Rollout) -> list[tuple[np.ndarray, int]]:
        """(rows, width) of each update micro-batch of a rollout: grpo.completion_chunks slices of every
        prompt's completions at the full width; with update_layout "bucketed", each prompt's completions
        are sorted by length first and each chunk runs at the width bucket of its longest completion
        (the widest over processes, so every process's arrays have one shape)."""
        g, k, width = self.grpo.num_generations, self.grpo.completion_chunks, r.tokens.shape[1]
        if self.grpo.update_layout != "bucketed":
            return [(chunk, width) for chunk in chunk_rows(len(r.lengths), g, k)]
        chunks = packing.length_sorted_chunks(r.lengths, g, k)
        longest = _gathered({"longest": np.asarray([[int(r.lengths[c].max()) for c in chunks]])})["longest"].max(0)
        return [(chunk, packing.width_bucket(int(n), width)) for chunk, n in zip(chunks, longest)]

    def _packed(self, r: sampler.Rollout, chunk: np.ndarray) -> dict | None:
        """The chunk's completions packed per prompt (mmjax.rl.packing), on the devices; None where
        update_layout "auto" finds packing not worth it. Every process packs its own prompts into as many
        rows a prompt as the most any process needs (so all processes choose alike), and its slots index
        the global packed array (process-major, as `global_rows` lays the rows out)."""
        g, width = self.grpo.completions_per_chunk, r.tokens.shape[1]
        lengths = np.maximum(r.lengths[chunk], 1)
        pooled = self.grpo.packed_rows == "pooled"
        # Pooled rows are split over the data axes as they lie: each process needs a multiple of its row shards.
        shards = 1 if self.mesh is None or not pooled else sharding.local_batch_shards(self.mesh)
        p = packing.pack(lengths, g, width, pooled=pooled, multiple=shards)
        most = int(_gathered({"rows": np.asarray([p.rows_per_prompt])})["rows"].max())
        if self.grpo.update_layout == "auto" and not packing.worth_packing(most, len(lengths) if pooled else g):
            return None
        if most > p.rows_per_prompt:  # another process needs more rows: pack again to its count
            p = packing.pack(lengths, g, width, rows_per_prompt=most, pooled=pooled, multiple=shards)
        offset = jax.process_index() * p.row.shape[0] * width
        rows = lambda x, axis=0: _rows(x, self.mesh, axis)  # noqa: E731
        positions = packing.packed(r.completion_positions[:, chunk].transpose(1, 2, 0), p).transpose(2, 0, 1)
        out = {"tokens": rows(packing.packed(r.tokens[chunk], p, fill=self.pad)), "positions": rows(positions, 1),
               "segments": rows(p.segment), "slot": rows(np.where(p.slot >= 0, p.slot + offset, -1))}
        if pooled:  # the prompt of each row, as an index into the global prompt batch
            out["row_prompt"] = rows(p.prompt + jax.process_index() * (len(lengths) // g))
        return out

    # ---- metrics ------------------------------------------------------------------------

    def final_metrics(self) -> dict[str, Any]:
        return {}

    def metrics(self, example: GRPOExample, stats: dict[str, float], step_time: float) -> dict[str, Any]:
        """TRL's metric names for this step, over every process's rows."""
        g, scored = self.grpo.num_generations, example.rollouts
        rows = _gathered({  # every process's rows, so each logs the numbers of the global batch
            "rewards": np.concatenate([s.rewards for s in scored]),
            "lengths": np.concatenate([s.rollout.lengths for s in scored]),
            "stopped": np.concatenate([s.rollout.stopped for s in scored]),
            "keep": np.concatenate([s.keep for s in scored]),
            "prompt_tokens": np.asarray([sum(int(s.rollout.prompt_mask.sum()) for s in scored)]),
            **{f"fn/{name}": np.concatenate([s.per_function[name] for s in scored])
               for name in scored[0].per_function}})
        rewards, lengths, stopped = rows["rewards"], rows["lengths"], rows["stopped"]
        groups = rewards.reshape(-1, g)
        tokens = int(rows["prompt_tokens"].sum()) * g + int(lengths.sum())
        out: dict[str, Any] = {
            "reward": float(rewards.mean()),
            "reward_std": float(groups.std(axis=1, ddof=1).mean()) if g > 1 else 0.0,
            "frac_reward_zero_std": float(advantages_lib.frac_reward_zero_std(jnp.asarray(rewards), g).value()),
            "completions/mean_length": float(lengths.mean()),
            "completions/max_length": int(lengths.max()),
            "completions/clipped_ratio": float((~stopped).mean()),
            **padding.padding_metrics(padding.per_call(lengths, len(scored[0].rollout.lengths),
                                                       [s.rollout.tokens.shape[1] for s in scored]),
                                      update_slots=sum(_update_slots(m) for m in example.micro_batches)),
            "update/packed_micro_batches": sum(m.packed is not None for m in example.micro_batches),
            "num_tokens": tokens,
            "tokens_per_second": tokens / step_time,
        }
        for name in scored[0].per_function:
            values = rows[f"fn/{name}"]
            out[f"rewards/{name}/mean"] = float(values.mean())
            out[f"rewards/{name}/std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        # The rewards' counts, summed over micro-batches and processes.
        for counts in sharding.allgather_json([s.reward_metrics for s in scored]):
            for metrics in counts:
                for name, value in metrics.items():
                    out[f"rewards/{name}"] = out.get(f"rewards/{name}", 0.0) + float(value)
        if self.feedback is not None:
            out.update(self.feedback.metrics(sharding.allgather_json))
        if self.cfg.filter_zero_std_groups:
            out["filter/dropped_groups"] = int((~rows["keep"].reshape(-1, g)[:, 0]).sum())
            out["filter/micro_batches"] = len(scored)  # the same on every process
        return out


def _update_slots(micro: GRPOMicroBatch) -> int:
    """The completion token slots the update runs for a micro-batch (all processes'), in its layout."""
    return int((micro.packed["tokens"] if micro.packed is not None else micro.tokens).size)


def chunk_rows(rows: int, num_generations: int, chunks: int) -> list[np.ndarray]:
    """The completion rows of each chunk of a prompt-major micro-batch ([prompt 0: G rows][prompt 1: ...]):
    chunk j holds completions j*G/k .. (j+1)*G/k - 1 of every prompt, still prompt-major."""
    order = np.arange(rows).reshape(-1, chunks, num_generations // chunks)
    return [order[:, j].ravel() for j in range(chunks)]


def _rows(array, mesh, axis: int = 0):
    """A per-row array on the devices: split over the mesh's batch axes (data parallel); with
    several processes, this process's rows of the global array."""
    return jnp.asarray(array) if mesh is None else sharding.global_rows(array, mesh, axis)


def _gathered(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each host array concatenated over all processes, in process order (one process: as is)."""
    parts = sharding.allgather_arrays(arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in arrays}
