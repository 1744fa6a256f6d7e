"""The SFT learner: one explicit loop, readable top to bottom.

    pipeline (prompt batch + answer tokens) -> loss gradients over the micro-batches
      -> one optimizer update -> metrics -> checkpoint

A step takes `gradient_accumulation_steps` batches from the pipeline (each a micro-batch
with its own vision tables), sums the gradients of their loss numerators and the (sum,
count) pairs, and divides once (`mmjax.train.sft`), so the step's loss is the token mean
over all its answer tokens whatever the split. The optimiser, checkpoints and metrics are
the GRPO learner's (`mmjax.train.optim`, `.checkpoints`, `.metrics`).

The data is finite (`num_epochs` passes): the loop stops at `max_steps` or when the data
runs out, whichever comes first, and saves a checkpoint there. A step that the data can
no longer fill is not taken.

Resume: params, optimizer state, the step and the grain iterator state (skip counts
included) are checkpointed together, and nothing else is random, so a resumed run
continues with the same numbers as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import sharding
from mmjax.config_help import help_text
from mmjax.data.batching import arrays
from mmjax.data.pipeline import skip_counter
from mmjax.rl import update as update_lib
from mmjax.rl.losses import finalize
from mmjax.train import checkpoints, compiles, metrics as metrics_lib, optim, preemption, sft

log = logging.getLogger(__name__)

COMPILE_WARMUP_STEPS = 2  # steps that compile as expected (the first builds every program)

_ROW_KEYS = ("input_ids", "attention_mask", "positions", "rope_deltas")  # the prompt batch's per-row arrays
ANSWER_KEYS = ("targets", "target_mask")  # what mmjax.data.sft.SftBatcher adds


@dataclasses.dataclass(frozen=True)
class SFTLoopConfig:
    """How the SFT loop runs (the optimiser is OptimizerConfig)."""
    max_steps: int = dataclasses.field(default=100, metadata=help_text(
        "optimizer steps to run at most; the loop also stops when the data ends (HF max_steps)"))
    save_steps: int = dataclasses.field(default=50, metadata=help_text(
        "checkpoint every N steps, and at the end (HF save_steps)"))
    save_total_limit: int | None = dataclasses.field(default=3, metadata=help_text(
        "checkpoints kept (HF save_total_limit)"))
    logging_steps: int = dataclasses.field(default=1, metadata=help_text(
        "write metrics every N steps (HF logging_steps)"))
    gradient_accumulation_steps: int = dataclasses.field(default=1, metadata=help_text(
        "pipeline batches (micro-batches) per optimizer step (HF gradient_accumulation_steps)"))
    async_checkpoint: bool = dataclasses.field(default=True, metadata=help_text("Orbax async saves"))

    def __post_init__(self):
        for name in ("max_steps", "save_steps", "logging_steps", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft loop: {name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass
class Micro:
    """One micro-batch on the device: the prompt batch and the answers it is trained on."""
    batch: dict[str, Any]       # the device part of the pipeline batch
    answers: dict[str, Any]     # targets, target_mask
    meta: dict[str, list]       # host metadata per prompt (solution, where, epoch, ...)
    prompt_tokens: int
    answer_tokens: int


# Jitted once per process with the hashable module, mesh and configs static, so learners of
# the same model and settings (a resumed run, tests) share their compiled programs.
@functools.partial(jax.jit, static_argnames=("module", "freeze_vision", "freeze_merger", "mesh"))
def _grads(params, batch, answers, *, module, freeze_vision: bool, freeze_merger: bool, mesh):
    shardings = None
    if mesh is not None:
        from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
        shardings = sharding.param_shardings(abstract_params(module.cfg), logical_axes(module.cfg), mesh)
    return sft.microbatch_grads(module, params, batch, answers, freeze_vision=freeze_vision,
                                freeze_merger=freeze_merger, param_shardings=shardings)


@functools.partial(jax.jit, static_argnames=("optimizer",), donate_argnums=(0, 1))
def _apply(params, opt_state, grad_sums, denominator, *, optimizer: optim.OptimizerConfig):
    return update_lib.apply_update(optim.make_optimizer(optimizer), params, opt_state, grad_sums, denominator)


class SFTLearner:
    """Trains `model` (a `Qwen2_5_VL` holder) on batches from `data` with cross-entropy on
    the answer tokens.

    Training consumes the holder's param buffers (the updates donate them); `train()` leaves
    the trained params in `self.model`.

    data: a grain IterDataset of `mmjax.data.sft.SftBatcher` batches made by
      `mmjax.data.pipeline.build_dataset` (its iterator state, skip counts included, is
      checkpointed).
    """

    def __init__(self, model, data, *, optimizer: optim.OptimizerConfig, loop: SFTLoopConfig, workdir: str,
                 mesh=None):
        self.model, self.data, self.cfg, self.workdir, self.mesh = model, data, loop, workdir, mesh
        self.optim_config = optimizer
        self.optimizer = optim.make_optimizer(optimizer)
        self.schedule = optim.learning_rate_schedule(optimizer)
        self._grads = functools.partial(_grads, module=model.module, freeze_vision=optimizer.freeze_vision,
                                        freeze_merger=optimizer.freeze_merger, mesh=mesh)
        self._apply = functools.partial(_apply, optimizer=optimizer)
        try:
            self._skips = skip_counter(data)  # the pipeline's running skip counts, part of its state
        except ValueError:  # not a build_dataset pipeline: nothing to report
            self._skips = None

    # ---- the loop -----------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Runs (or resumes) to max_steps or the end of the data; returns the last step's metrics."""
        cfg = self.cfg
        params, opt_state, step, iterator = self._restore_or_init()
        saved, last, stopping = step, {}, False
        with metrics_lib.MetricsWriter(self.workdir, jax.process_index(), resume_step=step) as writer, \
                checkpoints.TrainCheckpointer(self.workdir, cfg.save_steps, cfg.save_total_limit,
                                              cfg.async_checkpoint) as ckpt, \
                metrics_lib.progress(cfg.max_steps, initial=step, process_index=jax.process_index(),
                                     desc="SFT") as bar, \
                preemption.StopOnSignal() as stop, \
                compiles.CompileWatch(warmup_steps=COMPILE_WARMUP_STEPS) as compiled:
            while step < cfg.max_steps and not stopping:
                start = time.perf_counter()
                micros = self._micro_batches(iterator)                              # data -> device
                if micros is None:
                    log.info("SFT: the data ended after step %d (max_steps %d)", step, cfg.max_steps)
                    break
                params, opt_state, stats, grad_norm = self._update(params, opt_state, micros)  # update
                step += 1
                metrics = self._metrics(micros, stats, grad_norm, step, time.perf_counter() - start)
                metrics["perf/compiles"] = compiled.step_done(step)  # new shapes after warm-up: warned
                if step % cfg.logging_steps == 0 or step == cfg.max_steps:
                    writer.write(step, metrics)
                stopping = stop.reached(step)                                       # a signal: save, stop
                if ckpt.save(step, params, opt_state, iterator.get_state(), self.model.config,
                             self.model.hf_layout, force=step == cfg.max_steps or stopping):
                    saved = step
                bar.set_postfix(metrics_lib.progress_postfix(metrics))
                bar.update(1)
                last = metrics
            if saved != step:  # the data ended between two saves: keep what was trained
                ckpt.save(step, params, opt_state, iterator.get_state(), self.model.config,
                          self.model.hf_layout, force=True)
            ckpt.wait()
        last.update(self._skip_metrics())  # the whole run's count, the end of the data's included
        if last.get("data/skipped"):
            log.warning("SFT: %d samples skipped in all (%s)", last["data/skipped"],
                        ", ".join(f"{k[len('data/skipped/'):]} {v}" for k, v in last.items()
                                  if k.startswith("data/skipped/")))
        self.model = self.model.replace(params=params)
        if stopping and step < cfg.max_steps:
            raise preemption.Preempted(step)
        return last

    # ---- pieces, in the order the loop calls them ----------------------------------------

    def _restore_or_init(self):
        params = self.model.params
        opt_target = jax.eval_shape(self.optimizer.init, params)
        iterator = iter(self.data)
        state = checkpoints.restore_latest(self.workdir, params_target=params, opt_state_target=opt_target)
        if state is None:
            return params, self.optimizer.init(params), 0, iterator
        iterator.set_state(state.data_state)
        log.info("resumed from %s at step %d", checkpoints.checkpoint_dir(self.workdir), state.step)
        params = jax.tree.map(lambda a, like: jax.device_put(a, like.sharding), state.params, params)
        return params, state.opt_state, state.step, iterator

    def _micro_batches(self, iterator: Iterator) -> list[Micro] | None:
        """The step's `gradient_accumulation_steps` batches on the device; None if the data
        cannot fill the step."""
        micros = []
        for _ in range(self.cfg.gradient_accumulation_steps):
            try:
                batch = next(iterator)
            except StopIteration:
                if micros:
                    log.warning("SFT: dropping a last step of %d of %d micro-batches (the data ended)",
                                len(micros), self.cfg.gradient_accumulation_steps)
                return None
            device = arrays(batch)
            device = {k: self._rows(v, axis=1 if k == "positions" else 0) if k in _ROW_KEYS else v
                      for k, v in device.items()}
            answers = {k: self._rows(batch[k]) for k in ANSWER_KEYS}
            micros.append(Micro(batch=device, answers=answers, meta=batch["meta"],
                                prompt_tokens=int(np.asarray(batch["attention_mask"]).sum()),
                                answer_tokens=int(np.asarray(batch["target_mask"]).sum())))
        return micros

    def _rows(self, array, axis: int = 0):
        """A per-row array on the device: split over the mesh's batch axes (data parallel)."""
        if self.mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, sharding.batch_sharding(self.mesh, np.shape(array), batch_axis=axis))

    def _update(self, params, opt_state, micros: list[Micro]):
        """One optimizer step over all micro-batches: sum numerators' grads, divide once."""
        grad_sum, stats = None, None
        for m in micros:
            grads, s = self._grads(params, m.batch, m.answers)
            grad_sum = grads if grad_sum is None else jax.tree.map(jnp.add, grad_sum, grads)
            stats = s if stats is None else jax.tree.map(jnp.add, stats, s)
        params, opt_state, grad_norm = self._apply(params, opt_state, grad_sum, stats["loss"].count)
        return params, opt_state, stats, grad_norm

    def _metrics(self, micros: list[Micro], stats, grad_norm, step: int, step_time: float) -> dict[str, Any]:
        """HF / TRL names where they exist (the device sums divided once, here)."""
        prompt_tokens = sum(m.prompt_tokens for m in micros)
        answer_tokens = sum(m.answer_tokens for m in micros)
        out: dict[str, Any] = {k: float(v) for k, v in finalize(jax.device_get(stats)).items()}
        out.update({
            "tokens/prompt": prompt_tokens,
            "tokens/answer": answer_tokens,
            "step_time": step_time,
            "tokens_per_second": (prompt_tokens + answer_tokens) / step_time,
            "learning_rate": float(self.schedule(step - 1)),
            "grad_norm": float(grad_norm),
            "data/epoch": max(int(e) for e in micros[-1].meta["epoch"]),  # 0-based pass over the data
        })
        out.update(self._skip_metrics())
        return out

    def _skip_metrics(self) -> dict[str, int]:
        """Samples the pipeline skipped so far (a running total, restored on resume), by reason."""
        counts = self._skips.counts if self._skips is not None else {}
        out = {"data/skipped": sum(counts.values())}
        out.update({f"data/skipped/{reason}": n for reason, n in sorted(counts.items())})
        return out
