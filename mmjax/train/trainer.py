"""The one training loop, for every objective (GRPO, SFT), readable top to bottom.

    pipeline batches -> objective.prepare (GRPO: sample, score, advantages) -> the example's
      micro-batches: grads of the loss numerators, summed -> one update (divide once)
      -> metrics -> checkpoint (and, on SIGTERM, a last checkpoint and Preempted)

The trainer does once, for every objective, what does not depend on it: restoring or
initialising params and optimizer state in the mesh's layouts, drawing the step's
`gradient_accumulation_steps` pipeline batches, exact (sum, count) accumulation, the
update, metrics (JSONL, TensorBoard, a progress bar, `perf/compiles`), checkpoints with the
data iterator's state, and stopping cleanly on a signal. An objective supplies the rest
(`Objective` below). Several processes: every process runs this loop on its own data shard;
the objective's micro-batches are global arrays over the mesh (`mmjax.sharding.global_rows`).

Resume: params, optimizer state, the step, the data iterator and the running counters are
checkpointed together and nothing else is random (GRPO's sampling keys are fold_in(seed,
step, micro-batch)), so a resumed run continues with the numbers of one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from mmjax import sharding
from mmjax.config_help import help_text
from mmjax.models import lora
from mmjax.train import checkpoints, compiles, metrics as metrics_lib, optim, preemption
from mmjax.train import update as update_lib
from mmjax.train.weighted import accumulate, finalize

log = logging.getLogger(__name__)

COMPILE_WARMUP_STEPS = 2  # steps that compile as expected (the first builds every program)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the loop runs, for every objective (the optimiser is OptimizerConfig)."""
    max_steps: int = dataclasses.field(default=100, metadata=help_text(
        "optimizer steps to run at most; the loop also stops when the data ends (TRL / HF max_steps); "
        "SFT recipes: 0 = as many as sft.num_epochs passes take"))
    save_steps: int = dataclasses.field(default=50, metadata=help_text(
        "checkpoint every N steps, and at the end (TRL / HF save_steps)"))
    save_total_limit: int | None = dataclasses.field(default=3, metadata=help_text(
        "checkpoints kept (TRL / HF save_total_limit)"))
    logging_steps: int = dataclasses.field(default=1, metadata=help_text(
        "write metrics every N steps (TRL / HF logging_steps)"))
    gradient_accumulation_steps: int = dataclasses.field(default=1, metadata=help_text(
        "pipeline batches (micro-batches) per optimizer step (TRL / HF gradient_accumulation_steps)"))
    async_checkpoint: bool = dataclasses.field(default=True, metadata=help_text("Orbax async saves"))

    def __post_init__(self):
        for name in ("max_steps", "save_steps", "logging_steps", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")


class Objective(Protocol):
    """What a training objective supplies to the Trainer."""

    name: str  # the progress bar's label
    # (params, micro) -> (Weighted loss, {name: Weighted | Max}): pure, and hashable (a static
    # argument of the jitted gradient function), e.g. a frozen dataclass of the module and configs.
    loss_fn: Hashable
    updates_per_example: int  # optimizer updates per prepared example (GRPO's num_iterations)
    cumulative: tuple[str, ...]  # metrics summed over the whole run (TRL's num_tokens)

    def start(self, params) -> None:
        """Called once with the run's starting params (before any restore or update)."""

    def prepare(self, params, batches: list[dict], step: int, more: Callable[[], dict]) -> Any:
        """An immutable example (a flax.struct.dataclass) whose `micro_batches` the loss
        takes one at a time. `more()` draws one more pipeline batch (online filtering)."""

    def metrics(self, example, stats: dict[str, float], step_time: float) -> dict[str, Any]:
        """The step's metrics from the example and the finalized device statistics."""

    def final_metrics(self) -> dict[str, Any]:
        """What `train()` adds to the last step's metrics once the loop ends (e.g. totals
        that grew after the last step, such as rows skipped at the end of the data)."""


class Trainer:
    """Trains `model` (a `Qwen2_5_VL`) on batches from `data` with `objective`.

    Training consumes the model's param buffers (the updates donate them); `train()` leaves
    the trained params in `self.model` and returns the last step's metrics.
    data: a grain IterDataset (its iterator state is checkpointed).
    frozen_dtype: the stored dtype of the params the optimizer freezes (None: the model's).
    adapters: LoRA (mmjax.models.lora; the objective's loss applies the wrapped module): the new
    adapters to train, and `model.params` the frozen base (stored in frozen_dtype). Only the
    adapters and their optimizer state train and are checkpointed; `train()` leaves the merged
    model (base + adapters folded in) in `self.model`.
    """

    def __init__(self, model, data, objective: Objective, *, optimizer: optim.OptimizerConfig,
                 config: TrainConfig, workdir: str, mesh=None, frozen_dtype=None, adapters=None, lora=None):
        self.model, self.data, self.objective = model, data, objective
        self.cfg, self.optim_config, self.workdir, self.mesh = config, optimizer, workdir, mesh
        self.frozen_dtype = frozen_dtype
        if (adapters is None) != (lora is None):
            raise ValueError("LoRA needs both the adapters and their LoraSpec")
        self.adapters, self.lora = adapters, lora
        # The frozen base the adapters sit on (never donated: the updates take the adapters alone).
        self.base = None if adapters is None else (
            jax.tree.map(lambda p: optim.cast_floating(p, frozen_dtype), model.params) if frozen_dtype else model.params)
        if self.base is not None:  # the model holds the base as stored: no second, wider copy stays alive
            self.model = model.replace(params=self.base)
        if mesh is None and jax.process_count() > 1:
            raise ValueError(f"{jax.process_count()} processes need a mesh over all their devices "
                             "(config.mesh, e.g. --config.mesh.data=-1); without one each would train alone")
        self.optimizer = optim.make_optimizer(optimizer)
        self.schedule = optim.learning_rate_schedule(optimizer)
        self._grads = functools.partial(update_lib.microbatch_grads, loss_fn=objective.loss_fn,
                                        freeze_vision=optimizer.freeze_vision,
                                        freeze_merger=optimizer.freeze_merger, mesh=mesh)
        self._apply = jax.jit(functools.partial(update_lib.apply_update, self.optimizer), donate_argnums=(0, 1))

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs (or resumes) to max_steps or the end of the data; returns the last step's metrics."""
        cfg, objective = self.cfg, self.objective
        objective.start(self.model.params)  # with LoRA, the base
        params, opt_state, step, iterator, counters = self._restore_or_init()
        saved, last, stopping = step, {}, False
        with metrics_lib.MetricsWriter(self.workdir, jax.process_index(), resume_step=step) as writer, \
                checkpoints.TrainCheckpointer(self.workdir, cfg.save_steps, cfg.save_total_limit,
                                              cfg.async_checkpoint) as ckpt, \
                metrics_lib.progress(cfg.max_steps, initial=step, process_index=jax.process_index(),
                                     desc=objective.name) as bar, \
                preemption.StopOnSignal() as stop, \
                compiles.CompileWatch(warmup_steps=COMPILE_WARMUP_STEPS) as compiled:
            while step < cfg.max_steps and not stopping:
                start = time.perf_counter()
                batches = self._draw(iterator)                                     # pipeline
                if batches is None:
                    log.info("%s: the data ended after step %d (max_steps %d)", objective.name, step, cfg.max_steps)
                    break
                example = objective.prepare(params, batches, step, lambda: next(iterator))  # e.g. rollouts
                for _ in range(objective.updates_per_example):                     # update(s)
                    params, opt_state, stats, grad_norm = self._update(params, opt_state, example)
                step += 1
                metrics = self._metrics(example, stats, grad_norm, step, time.perf_counter() - start)
                metrics["perf/compiles"] = compiled.step_done(step)  # new shapes after warm-up: warned
                for name in objective.cumulative:
                    counters[name] = counters.get(name, 0) + metrics[name]
                    metrics[name] = counters[name]
                if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                    writer.write(step, metrics)
                stopping = stop.reached(step)                                       # a signal: save, stop
                if ckpt.save(step, params, opt_state, iterator.get_state(), self.model.config, self.model.hf_layout,
                             force=step == cfg.max_steps or stopping, counters=counters):
                    saved = step
                bar.set_postfix(metrics_lib.progress_postfix(metrics))
                bar.update(1)
                last = metrics
            if saved != step:  # the data ended between two saves: keep what was trained
                ckpt.save(step, params, opt_state, iterator.get_state(), self.model.config, self.model.hf_layout,
                          force=True, counters=counters)
            ckpt.wait()
        if self.base is not None:  # LoRA: the trained adapters, and the model they define
            self.adapters = params
        self.model = self.model.replace(params=params if self.base is None else lora.merged(self.base, params, self.lora))
        if stopping and step < cfg.max_steps:
            raise preemption.Preempted(step)
        return {**last, **objective.final_metrics()} if last else last

    # ---- pieces, in the order the loop calls them ----------------------------------------

    def _restore_or_init(self):
        o = self.optim_config
        if self.adapters is not None:  # LoRA: the adapters are what trains (replicated: they are small)
            params = self.adapters if self.mesh is None else jax.device_put(
                self.adapters, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))
        else:
            params = optim.frozen_as(self.model.params, self.frozen_dtype, o.freeze_vision, o.freeze_merger)
        init = jax.jit(self.optimizer.init)
        opt_target = jax.eval_shape(init, params)
        if self.mesh is not None:
            # The update returns params and optimizer state in exactly the layouts it takes
            # (GSPMD would return equivalent shardings spelt differently), so it compiles once,
            # not again at the second step; a restored state is read into the same layouts.
            replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
            param_layout = jax.tree.map(lambda a: a.sharding, params)
            opt_layout = optimizer_layout(opt_target, params, replicated)
            init = jax.jit(self.optimizer.init, out_shardings=opt_layout)
            opt_target = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                      opt_target, opt_layout)
            self._apply = jax.jit(functools.partial(update_lib.apply_update, self.optimizer), donate_argnums=(0, 1),
                                  out_shardings=(param_layout, opt_layout, replicated))
        iterator = iter(self.data)
        state = checkpoints.restore_latest(self.workdir, params_target=params, opt_state_target=opt_target)
        if state is None:
            return params, init(params), 0, iterator, {}
        iterator.set_state(state.data_state)
        log.info("resumed from %s at step %d", checkpoints.checkpoint_dir(self.workdir), state.step)
        params = jax.tree.map(lambda a, like: jax.device_put(a, like.sharding), state.params, params)
        return params, state.opt_state, state.step, iterator, dict(state.counters or {})

    def _draw(self, iterator: Iterator) -> list[dict] | None:
        """The step's `gradient_accumulation_steps` pipeline batches; None if the data cannot fill it."""
        batches = []
        for _ in range(self.cfg.gradient_accumulation_steps):
            try:
                batches.append(next(iterator))
            except StopIteration:
                if batches:
                    log.warning("%s: dropping a last step of %d of %d micro-batches (the data ended)",
                                self.objective.name, len(batches), self.cfg.gradient_accumulation_steps)
                return None
        return batches

    def _update(self, params, opt_state, example):
        """One optimizer step over the example's micro-batches: sum numerators' grads, divide once."""
        grad_sum, stats = None, None
        with sharding.maybe_activation_rules(self.mesh):  # rows split over the batch axes in every layer
            for micro in example.micro_batches:
                grads, s = self._grads(params, micro, self.base)
                grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
                stats = accumulate(stats, s)
            params, opt_state, grad_norm = self._apply(params, opt_state, grad_sum, stats["loss"].count)
        return params, opt_state, stats, grad_norm

    def _metrics(self, example, stats, grad_norm, step: int, step_time: float) -> dict[str, Any]:
        """The device sums divided once, the objective's own metrics, and the loop's."""
        out: dict[str, Any] = {k: float(v) for k, v in finalize(jax.device_get(stats)).items()}
        out.update(self.objective.metrics(example, out, step_time))
        out.update({"step_time": step_time, "learning_rate": float(self.schedule(step - 1)),
                    "grad_norm": float(grad_norm)})
        return out


def optimizer_layout(opt_abstract, params, replicated):
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
