"""The GRPO learner: one explicit loop, readable top to bottom.

    pipeline -> sampler (G completions per prompt) -> rewards -> advantages
      -> update(s) -> metrics -> checkpoint

A step takes `gradient_accumulation_steps` batches from the pipeline (each a micro-batch
with its own vision tables), samples G completions for each prompt with the current params,
scores them, computes advantages over the whole step, then runs `num_iterations` optimizer
updates, each accumulating the exact (sum, count) loss over the micro-batches. Nothing here
recomputes what the batch or the rollout carries: positions, vision tables, bucketed prompt
arrays and completion positions travel as data.

Resume: params, optimizer state, the step and the grain iterator state are checkpointed
together; sampling keys are fold_in(seed, step, micro-batch), so a resumed run continues
with the same numbers as one that never stopped.

Several processes (`jax.distributed`, one mesh over all their devices): each process reads
its own shard of the data (`mmjax.data.pipeline.record_keys`: side by side, the processes'
micro-batches are one process's bigger micro-batch), samples and scores its own prompts'
completions (a group never spans processes), and the rows become global arrays in process
order (`mmjax.sharding.process_batch` / `global_rows`). What needs every row (advantages
with scale_rewards="batch", online filtering's counts, the metrics) is computed from the
host arrays of all processes (`sharding.allgather_arrays`), so every process takes the
same decisions and the numbers equal one process's on the same global batch. Every process
joins each checkpoint save with its own data iterator state.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import sharding
from mmjax.data.batching import arrays
from mmjax.models import sampler
from mmjax.rl import advantages as advantages_lib
from mmjax.rl import grpo as grpo_lib
from mmjax.rl import update as update_lib
from mmjax.rl.losses import Weighted, finalize
from mmjax.train import checkpoints, compiles, metrics as metrics_lib, optim, preemption
from mmjax.config_help import help_text

log = logging.getLogger(__name__)

COMPILE_WARMUP_STEPS = 2  # steps that compile as expected (the first builds every program)


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """How the loop runs (the algorithm is GRPOConfig, the optimiser OptimizerConfig)."""
    max_steps: int = dataclasses.field(default=100, metadata=help_text(
        "optimizer steps to run (TRL max_steps)"))
    save_steps: int = dataclasses.field(default=50, metadata=help_text(
        "checkpoint every N steps, and at the end (TRL save_steps)"))
    save_total_limit: int | None = dataclasses.field(default=3, metadata=help_text(
        "checkpoints kept (TRL save_total_limit)"))
    logging_steps: int = dataclasses.field(default=1, metadata=help_text(
        "write metrics every N steps (TRL logging_steps)"))
    gradient_accumulation_steps: int = dataclasses.field(default=1, metadata=help_text(
        "pipeline batches (micro-batches) per optimizer step (TRL gradient_accumulation_steps)"))
    seed: int = dataclasses.field(default=0, metadata=help_text("sampling keys: fold_in(seed, step, micro-batch)"))
    filter_zero_std_groups: bool = dataclasses.field(default=False, metadata=help_text(
        "online filtering: drop groups whose rewards all match and draw more micro-batches (DAPO)"))
    filter_max_retries: int = dataclasses.field(default=2, metadata=help_text(
        "extra micro-batches a step may draw to refill filtered groups"))
    allowed_token_ids: tuple[int, ...] | None = dataclasses.field(default=None, metadata=help_text(
        "restrict sampling to these token ids (None: the whole vocabulary)"))
    async_checkpoint: bool = dataclasses.field(default=True, metadata=help_text("Orbax async saves"))

    def __post_init__(self):
        for name in ("max_steps", "save_steps", "logging_steps", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"learner.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass
class Micro:
    """One micro-batch of a step: the prompts' model batch and what the rollout made of it."""
    batch: dict[str, Any]          # device part of the pipeline batch, prompt arrays bucketed
    meta: dict[str, list]          # host metadata per prompt (solution, task, ...)
    rollout: sampler.Rollout
    texts: list[str]
    rewards: np.ndarray            # [N] total reward per completion
    per_function: dict[str, np.ndarray]
    reward_metrics: dict[str, float]
    keep: np.ndarray               # [N] bool: the row takes part in the update (online filtering)
    device: dict[str, Any] | None = None  # tokens, mask, positions, logps, advantages on device


_ROW_KEYS = ("input_ids", "attention_mask", "positions", "rope_deltas")  # the prompt batch's per-row arrays
RewardFn = Callable[..., Any]  # rewards.combine(...): (texts, targets, **columns) -> RewardOutput


class GRPOLearner:
    """Trains `model` (a `Qwen2_5_VL` holder) with GRPO on batches from `data`.

    Training consumes the holder's param buffers (the updates donate them); `train()` leaves
    the trained params in `self.model`.

    data: a grain IterDataset of `Batcher` batches (its iterator state is checkpointed).
    reward: texts, targets, task=... -> RewardOutput (`mmjax.rewards.combine`).
    decode: token ids -> text (the tokenizer's decode).
    bucket_lengths: the prompt-length buckets `data` pads to (config.data.bucket_lengths), so
    the sampler keeps its prompts as they come; None: `mmjax.processing.buckets`' rule.
    """

    def __init__(self, model, data, reward: RewardFn, decode: Callable[[Sequence[int]], str], *,
                 grpo: grpo_lib.GRPOConfig, optimizer: optim.OptimizerConfig, learner: LearnerConfig,
                 workdir: str, eos_token_ids: Sequence[int], pad_token_id: int, mesh=None,
                 bucket_lengths: Sequence[int] | None = None):
        self.model, self.data, self.reward, self.decode = model, data, reward, decode
        self.grpo, self.optim_config, self.cfg, self.workdir = grpo, optimizer, learner, workdir
        self.eos, self.pad = tuple(eos_token_ids), int(pad_token_id)
        self.mesh = mesh
        self.bucket_lengths = tuple(bucket_lengths) if bucket_lengths else None
        if mesh is None and jax.process_count() > 1:
            raise ValueError(f"GRPOLearner: {jax.process_count()} processes need a mesh over all their devices "
                             "(config.mesh, e.g. --config.mesh.data=-1); without one each would train alone")
        self.optimizer = optim.make_optimizer(optimizer)
        self.schedule = optim.learning_rate_schedule(optimizer)
        self.sampling = sampler.SamplingParams(grpo.temperature, grpo.top_p, grpo.top_k)
        # Old log-probs come from the sampler when they are the policy's own at the training
        # temperature; otherwise they are recomputed once before the first update.
        self.recompute_old = grpo.num_iterations > 1 or grpo.temperature != 1.0
        module = model.module
        shardings = None
        if mesh is not None:
            from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
            shardings = sharding.param_shardings(abstract_params(model.config), logical_axes(model.config), mesh)
        self._grads = jax.jit(functools.partial(update_lib.microbatch_grads, module, config=grpo,
                                                param_shardings=shardings, freeze_vision=optimizer.freeze_vision,
                                                freeze_merger=optimizer.freeze_merger))
        self._logprobs = jax.jit(functools.partial(update_lib.rollout_logprobs, module,
                                                   num_generations=grpo.num_generations,
                                                   temperature=grpo.temperature))
        self._apply = jax.jit(functools.partial(update_lib.apply_update, self.optimizer), donate_argnums=(0, 1))

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs (or resumes) to max_steps; returns the last step's metrics."""
        cfg = self.cfg
        params, opt_state, step, iterator = self._restore_or_init()
        # The reference policy is the starting point; beta = 0 keeps no copy. (The updates
        # donate the params' buffers, so the reference must be a copy, not the same arrays.)
        ref_params = jax.tree.map(jnp.copy, params) if self.grpo.beta > 0 else None
        last: dict[str, Any] = {}
        total_tokens = int(self._restored_counters.get("num_tokens", 0))  # TRL's num_tokens is cumulative
        stopping = False
        with metrics_lib.MetricsWriter(self.workdir, jax.process_index(), resume_step=step) as writer, \
                checkpoints.TrainCheckpointer(self.workdir, cfg.save_steps, cfg.save_total_limit,
                                              cfg.async_checkpoint) as ckpt, \
                metrics_lib.progress(cfg.max_steps, initial=step, process_index=jax.process_index(),
                                     desc="GRPO") as bar, \
                preemption.StopOnSignal() as stop, \
                compiles.CompileWatch(warmup_steps=COMPILE_WARMUP_STEPS) as compiled:
            while step < cfg.max_steps and not stopping:
                start = time.perf_counter()
                micros = self._rollouts(params, iterator, step)                    # sample + score
                self._advantages(micros)                                            # whole step
                self._to_device(params, ref_params, micros)                         # old / ref log-probs
                for _ in range(self.grpo.num_iterations):                           # update(s)
                    params, opt_state, stats, grad_norm = self._update(params, opt_state, micros)
                step += 1
                metrics = self._metrics(micros, stats, grad_norm, step, time.perf_counter() - start)
                metrics["perf/compiles"] = compiled.step_done(step)  # new shapes after warm-up: warned
                total_tokens += metrics["num_tokens"]
                metrics["num_tokens"] = total_tokens
                if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                    writer.write(step, metrics)
                stopping = stop.reached(step)                                       # a signal: save, stop
                ckpt.save(step, params, opt_state, iterator.get_state(), self.model.config, self.model.hf_layout,
                          force=step == cfg.max_steps or stopping, counters={"num_tokens": total_tokens})
                bar.set_postfix(metrics_lib.progress_postfix(metrics))
                bar.update(1)
                last = metrics
            ckpt.wait()
        self.model = self.model.replace(params=params)
        if stopping and step < cfg.max_steps:
            raise preemption.Preempted(step)
        return last

    # ---- pieces, in the order the loop calls them ----------------------------------------

    def _restore_or_init(self):
        params = self.model.params
        init = jax.jit(self.optimizer.init)
        opt_target = jax.eval_shape(init, params)
        if self.mesh is not None:
            # The update returns params and optimizer state in exactly the layouts it takes
            # (GSPMD would return equivalent shardings spelt differently), so it compiles once,
            # not again at the second step; a restored state is read into the same layouts.
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            param_layout = jax.tree.map(lambda a: a.sharding, params)
            opt_layout = _optimizer_layout(opt_target, params, replicated)
            init = jax.jit(self.optimizer.init, out_shardings=opt_layout)
            opt_target = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                      opt_target, opt_layout)
            self._apply = jax.jit(functools.partial(update_lib.apply_update, self.optimizer), donate_argnums=(0, 1),
                                  out_shardings=(param_layout, opt_layout, replicated))
        iterator = iter(self.data)
        state = checkpoints.restore_latest(self.workdir, params_target=params, opt_state_target=opt_target)
        self._restored_counters = dict(state.counters or {}) if state is not None else {}
        if state is None:
            return params, init(params), 0, iterator
        iterator.set_state(state.data_state)
        log.info("resumed from %s at step %d", checkpoints.checkpoint_dir(self.workdir), state.step)
        params = jax.tree.map(lambda a, like: jax.device_put(a, like.sharding), state.params, params)
        return params, state.opt_state, state.step, iterator

    def _rollouts(self, params, iterator: Iterator, step: int) -> list[Micro]:
        """Sample and score `gradient_accumulation_steps` micro-batches; with online filtering,
        draw up to `filter_max_retries` more until the kept groups refill the step."""
        cfg, g = self.cfg, self.grpo.num_generations
        base = cfg.gradient_accumulation_steps
        limit = base + (cfg.filter_max_retries if cfg.filter_zero_std_groups else 0)
        micros, kept_groups, wanted = [], 0, 0
        while len(micros) < limit:
            if len(micros) >= base and (not cfg.filter_zero_std_groups or kept_groups >= wanted):
                break
            micro = self._rollout(params, next(iterator), seed=self._sampling_seed(step, len(micros)))
            groups = micro.rewards.reshape(-1, g)
            if cfg.filter_zero_std_groups:
                signal = ~np.all(groups == groups[:, :1], axis=1)
                micro.keep = np.repeat(signal, g)
                # Counted over all processes, so all of them draw the same number of micro-batches.
                counts = _gathered({"kept": np.asarray([signal.sum(), len(signal)])})["kept"].reshape(-1, 2)
                kept_groups += int(counts[:, 0].sum())
                wanted = wanted or base * int(counts[:, 1].sum())
            micros.append(micro)
        return micros

    def _sampling_seed(self, step: int, micro_batch: int) -> int:
        """The sampler's seed for a micro-batch: a function of (seed, step, micro-batch) only,
        so a resumed run draws the same completions as one that never stopped."""
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.cfg.seed), step), micro_batch)
        return int(jax.random.randint(key, (), 0, 2**31 - 1))

    def _rollout(self, params, batch: dict[str, Any], seed: int) -> Micro:
        # Several processes: prompts padded to one length, one vision table for all processes.
        device_batch = sharding.process_batch(arrays(batch), self.pad)
        if self.mesh is not None:  # the vision tables once on the devices, for every pass over them
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            device_batch.update({k: jax.device_put(device_batch[k], replicated)
                                 for k in ("image", "video") if device_batch.get(k) is not None})
        rollout = sampler.generate(
            self.model.module, params, device_batch, max_new_tokens=self.grpo.max_completion_length,
            sampling=self.sampling, num_generations=self.grpo.num_generations, seed=seed,
            eos_token_ids=self.eos, pad_token_id=self.pad, allowed_token_ids=self.cfg.allowed_token_ids,
            mesh=self.mesh, bucket_lengths=self.bucket_lengths)
        texts = [self.decode(ids) for ids in rollout.completion_ids()]  # the stop token is not text
        g = self.grpo.num_generations
        meta = batch["meta"]
        targets = [s for s in meta["solution"] for _ in range(g)]
        tasks = [t for t in meta["task"] for _ in range(g)]
        out = self.reward(texts, targets, task=tasks)
        return Micro(batch=rollout.prompt_batch(device_batch), meta=meta, rollout=rollout, texts=texts,
                     rewards=np.asarray(out.total, np.float32),
                     per_function={k: np.asarray(v, np.float32) for k, v in out.per_function.items()},
                     reward_metrics=dict(out.metrics), keep=np.ones(len(texts), bool))

    def _advantages(self, micros: list[Micro]) -> None:
        """Advantages over the whole step (so scale_rewards="batch" sees every micro-batch) and
        over all processes' rows; each process keeps its own rows'."""
        local = np.concatenate([m.rewards for m in micros])
        everyone = sharding.allgather_arrays({"rewards": local})
        rewards = jnp.asarray(np.concatenate([p["rewards"] for p in everyone]))
        adv = np.asarray(grpo_lib.advantages(self.grpo, rewards))
        offset = sum(len(p["rewards"]) for p in everyone[:jax.process_index()])
        for m in micros:
            n = len(m.rewards)
            m.device = {"advantages": adv[offset:offset + n]}
            offset += n

    def _to_device(self, params, ref_params, micros: list[Micro]) -> None:
        for m in micros:
            r = m.rollout
            d = m.device
            mask = r.mask & m.keep[:, None]
            if self.grpo.mask_truncated_completions:
                mask = mask & r.stopped[:, None]
            # Every kept row counts in the loss's denominator, truncated ones included (TRL
            # divides by all rows: masking a truncated row zeroes its tokens, not its row).
            d.update(tokens=r.tokens, mask=mask, positions=r.completion_positions, sampler_logp=r.logprobs,
                     row_mask=m.keep)
            d.update({k: self._rows(v, axis=1 if k == "positions" else 0) for k, v in d.items()})
            m.batch = {k: self._rows(v, axis=1 if k == "positions" else 0) if k in _ROW_KEYS else v
                       for k, v in m.batch.items()}
            d["old_logp"] = self._logprobs(params, m.batch, d) if self.recompute_old else d["sampler_logp"]
            d["ref_logp"] = self._logprobs(ref_params, m.batch, d) if ref_params is not None else None

    def _rows(self, array, axis: int = 0):
        """A per-row array on the device: split over the mesh's batch axes (data parallel); with
        several processes, this process's rows of the global array."""
        if self.mesh is None:
            return jnp.asarray(array)
        return sharding.global_rows(array, self.mesh, axis)

    def _update(self, params, opt_state, micros: list[Micro]):
        """One optimizer step over all micro-batches: sum numerators' grads, divide once."""
        grad_sum, stats, drift_max = None, None, 0.0
        for m in micros:
            grads, s, drift = self._grads(params, m.batch, m.device)
            grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
            stats = s if stats is None else jax.tree.map(jnp.add, stats, s)
            drift_max = jnp.maximum(drift_max, drift)
        params, opt_state, grad_norm = self._apply(params, opt_state, grad_sum, stats["loss"].count)
        stats = dict(stats)
        stats["sampling/sampling_logp_difference/max"] = Weighted(drift_max, jnp.asarray(1))
        return params, opt_state, stats, grad_norm

    def _metrics(self, micros: list[Micro], stats, grad_norm, step: int, step_time: float) -> dict[str, Any]:
        """TRL's metric names for this step (the device sums divided once, here)."""
        g = self.grpo.num_generations
        rows = _gathered({  # every process's rows, so each logs the numbers of the global batch
            "rewards": np.concatenate([m.rewards for m in micros]),
            "lengths": np.concatenate([m.rollout.lengths for m in micros]),
            "stopped": np.concatenate([m.rollout.stopped for m in micros]),
            "keep": np.concatenate([m.keep for m in micros]),
            "prompt_tokens": np.asarray([sum(int(m.rollout.prompt_mask.sum()) for m in micros)]),
            **{f"fn/{name}": np.concatenate([m.per_function[name] for m in micros])
               for name in micros[0].per_function}})
        rewards, lengths, stopped = rows["rewards"], rows["lengths"], rows["stopped"]
        groups = rewards.reshape(-1, g)
        prompt_tokens = int(rows["prompt_tokens"].sum())
        out: dict[str, Any] = {k: float(v) for k, v in finalize(jax.device_get(stats)).items()}
        out.update({
            "reward": float(rewards.mean()),
            "reward_std": float(groups.std(axis=1, ddof=1).mean()) if g > 1 else 0.0,
            "frac_reward_zero_std": float(advantages_lib.frac_reward_zero_std(jnp.asarray(rewards), g).value()),
            "completions/mean_length": float(lengths.mean()),
            "completions/max_length": int(lengths.max()),
            "completions/clipped_ratio": float((~stopped).mean()),
            "num_tokens": prompt_tokens * g + int(lengths.sum()),
            "step_time": step_time,
            "tokens_per_second": (prompt_tokens * g + int(lengths.sum())) / step_time,
            "learning_rate": float(self.schedule(step - 1)),
            "grad_norm": float(grad_norm),
        })
        for name in micros[0].per_function:
            values = rows[f"fn/{name}"]
            out[f"rewards/{name}/mean"] = float(values.mean())
            out[f"rewards/{name}/std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        # The rewards' counts, summed over micro-batches and processes.
        for counts in sharding.allgather_json([m.reward_metrics for m in micros]):
            for metrics in counts:
                for name, value in metrics.items():
                    out[f"rewards/{name}"] = out.get(f"rewards/{name}", 0.0) + float(value)
        if self.cfg.filter_zero_std_groups:
            keep = rows["keep"]
            out["filter/dropped_groups"] = int((~keep.reshape(-1, g)[:, 0]).sum())
            out["filter/micro_batches"] = len(micros)  # the same on every process
        if self.grpo.beta == 0:
            out.pop("kl", None)
        return out


def _gathered(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each host array concatenated over all processes, in process order (one process: as is)."""
    parts = sharding.allgather_arrays(arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in arrays}


def _optimizer_layout(opt_abstract, params, replicated):
    """The sharding of every optimizer state leaf: a param's own for its moments (optax states
    mirror the params tree, so the leaf's path ends with the param's), replicated otherwise
    (step counts). `jax.eval_shape` alone would leave the moments on one device."""
    by_path = {jax.tree_util.keystr(path): a for path, a in jax.tree_util.tree_leaves_with_path(params)}
    longest_first = sorted(by_path.items(), key=lambda item: -len(item[0]))

    def layout(path, leaf):
        key = jax.tree_util.keystr(path)
        for suffix, param in longest_first:
            if key.endswith(suffix) and tuple(leaf.shape) == tuple(param.shape):
                return param.sharding
        return replicated

    return jax.tree_util.tree_map_with_path(layout, opt_abstract)
