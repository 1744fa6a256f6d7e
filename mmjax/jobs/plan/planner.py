"""Plan one recipe for one target: its programs compiled, the arithmetic beside them, a verdict.

    plan = make_plan(config, PlanConfig(device_memory_gb=80), devices, platform="gpu")
    plan.fits(), plan.peak_program(), plan.consumers()

`make_plan` builds the job's model without weights (`abstract_params` with the mesh's
shardings), the worst-case batch (`mmjax.jobs.plan.shapes`) and the job's programs
(`mmjax.jobs.plan.programs`) for the job named by `config.plan.job`:
  grpo   the rollout (vision encode, prefill, decode at G and max_completion_length), the
         reference log-prob pass (beta > 0), one micro-batch's gradients and the optimizer step;
  sft    one micro-batch's gradients and the optimizer step;
  score  the scoring job's three sampler calls: PISM's one-answer prompts, its K answers
         sharing a prefill, and CMAB's capture.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mmjax import sharding
from mmjax.jobs import build
from mmjax.jobs.plan import analytic, shapes
from mmjax.jobs.plan.options import PlanConfig
from mmjax.jobs.plan.programs import (Program, compile_program, device_bytes, learner_programs, prompt_arrays, rows,
                                      sampler_programs, with_shardings)
from mmjax.models import attention as attention_lib
from mmjax.models import lora
from mmjax.models import qwen2_5_vl
from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
from mmjax.models.sampling import SamplingParams
from mmjax.processing.buckets import bucket_size
from mmjax.rl.update import GRPOLoss, GRPOMicroBatch, rollout_logprobs
from mmjax.train import optim
from mmjax.train.sft import SFTLoss, SFTMicroBatch
from mmjax.train.trainer import optimizer_layout

DISAGREE = 0.25  # XLA's figure and the arithmetic differ by more than this share: the report says so


def model_config(config) -> qwen2_5_vl.Qwen25VLConfig:
    """The architecture: model.hf_dir's config.json (no weights are read), else the preset."""
    if config.model.hf_dir:
        return qwen2_5_vl.Qwen25VLConfig.from_pretrained(config.model.hf_dir)
    return qwen2_5_vl.preset(config.model.preset)


def mesh_sizes(config, devices: int) -> tuple[int, int, int]:
    """config.mesh's (data, fsdp, tensor) over `devices`, a -1 axis taking what the others leave."""
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or devices % known:
        raise ValueError(f"config.mesh {dict(zip(sharding.MESH_AXES, sizes))} does not fit {devices} devices "
                         "(config.plan.devices)")
    return tuple(devices // known if s == -1 else s for s in sizes)


@dataclasses.dataclass
class Plan:
    """One recipe planned for one target (bytes are per device)."""
    job: str
    platform: str
    devices: int
    mesh: dict[str, int]
    prompt: shapes.WorstPrompt
    shape: analytic.Shape
    programs: list[Program]
    arithmetic: dict[str, int]
    host: dict[str, int]
    usable_bytes: float
    device_memory_bytes: float
    notes: list[str]

    def compiled(self) -> list[Program]:
        return [p for p in self.programs if not p.error]

    def failed(self) -> list[Program]:
        return [p for p in self.programs if p.error]

    def peak_program(self) -> Program | None:
        done = self.compiled()
        return max(done, key=lambda p: p.peak_bytes) if done else None

    def peak_bytes(self) -> int:
        top = self.peak_program()
        return top.peak_bytes if top is not None else 0

    def fits(self) -> bool:
        return not self.failed() and self.peak_bytes() <= self.usable_bytes

    def consumers(self, n: int = 3) -> list[tuple[str, int]]:
        top = self.peak_program()
        return top.consumers()[:n] if top is not None else []

    def arithmetic_peak(self) -> int:
        """The arithmetic's peak per device: the update (state, gradients, activations) or the
        rollout (state and the KV cache), whichever is larger."""
        a = self.arithmetic
        state = a["params"] + a.get("optimizer state", 0) + a.get("reference params", 0)
        return max(state + a.get("gradients", 0) + a.get("activations", 0),
                   state + a["kv cache"] + a.get("merged policy", 0))

    def comparisons(self) -> list[dict]:
        """XLA's figure beside the arithmetic's where both measure the same thing."""
        by_name = {p.name: p for p in self.compiled()}
        a, rows_ = self.arithmetic, []

        def add(what, xla, arithmetic):
            if xla is None or not arithmetic:
                return
            ratio = xla / arithmetic
            rows_.append({"what": what, "xla_bytes": int(xla), "arithmetic_bytes": int(arithmetic),
                          "ratio": ratio, "disagree": abs(ratio - 1) > DISAGREE})

        step = by_name.get("update: optimizer step")
        if step is not None:
            add("training state (optimizer step's arguments)", step.argument_bytes,
                2 * a["trainable params"] + a["optimizer state"])
        prefill = next((p for n, p in by_name.items() if n.endswith("prefill")), None)
        if prefill is not None and self.job != "score":
            add(f"kv cache ('{prefill.name}' outputs)", prefill.output_bytes, a["kv cache"])
        grads = by_name.get("update: grads of one micro-batch")
        if grads is not None:
            add("activations (update temporaries)", grads.temp_bytes, a.get("activations", 0))
        return rows_


def make_plan(config, plan_cfg: PlanConfig, devices: list, platform: str) -> Plan:
    """Compile `config`'s job for a mesh over `devices` as `platform` would run it."""
    cfg = model_config(config)
    m = config.model
    param_dtype, compute_dtype = jnp.dtype(m.dtype), jnp.dtype(m.compute_dtype or m.dtype)
    module = qwen2_5_vl.Qwen25VLModule(cfg, dtype=compute_dtype, param_dtype=param_dtype, attention=m.attention,
                                       remat=m.remat, vision_remat=m.vision_remat)
    sizes = mesh_sizes(config, len(devices))
    mesh = None if np.prod(sizes) == 1 else sharding.make_mesh(*sizes, devices=devices[:int(np.prod(sizes))])
    params = abstract_params(cfg, param_dtype)
    if mesh is not None:
        params = with_shardings(params, sharding.param_shardings(params, logical_axes(cfg), mesh))
    data, job = config.data, plan_cfg.job
    prompt = shapes.worst_prompt(data, plan_cfg.text_tokens, cfg.vision.spatial_merge_size)
    spec = cfg.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    buckets = tuple(data.bucket_lengths) or None
    batch_shards = sizes[0] * sizes[1]
    kind = f"{'virtual ' if jax.default_backend() == 'cpu' else ''}device{'s' if len(devices) > 1 else ''}"
    notes = [f"compiled by XLA:{jax.default_backend().upper()} for {len(devices)} {kind}; another platform's "
             "compiler fuses and schedules differently, so its temporaries differ"]
    if jax.default_backend() == "cpu" and compute_dtype == jnp.bfloat16:
        notes.append("XLA:CPU upcasts bfloat16 matmuls and collectives to float32 and schedules a remat'd layer's "
                     "recompute early, keeping what remat frees: its temporaries of bfloat16 programs are upper "
                     "bounds for an accelerator (tools/bench/gpu_check.py, run on a GPU, prints the plan's "
                     "accounting of the GPU compiler's figures beside the measured peak)")
    attention_lib.stand_ins.clear()
    # JAX's trace caches do not key on the planning target: a program traced before for this
    # host (a test's, a job's in the same process) would be reused, and a plan's traces would
    # leak out to later calls. So the plan starts and ends with empty caches.
    jax.clear_caches()
    # Traced as the jobs trace them: in the mesh's activation rules, attention as on `platform`.
    with attention_lib.planning_target(platform), sharding.maybe_activation_rules(mesh):
        train = job != "score"
        accumulation = config.gradient_accumulation_steps if train else 1
        try:
            if train:
                programs, shape = _train_programs(config, plan_cfg, module, params, mesh, prompt, spec, buckets)
            else:
                programs, shape = _score_programs(config, module, params, mesh, prompt, spec, buckets, batch_shards)
        except sharding.ShardingError as e:  # the job could not even place its batch: that is the finding
            programs = [Program("the job's batch on the mesh", error=f"ShardingError: {e}")]
            shape = analytic.Shape(prompts=config.data.batch_size * plan_cfg.processes, prompt_slots=0,
                                   completions=0, completion_slots=0, patch_rows=0, batch_shards=1, model_shards=1)
    jax.clear_caches()
    for kernel, stand_in in sorted(attention_lib.stand_ins):
        notes.append(f"attention: {kernel} cannot compile on this host; {stand_in} stands in for it (O(T) memory "
                     "as a flash kernel, its own FLOPs and temporaries)")
    shape = dataclasses.replace(shape, model_shards=sizes[1] * sizes[2], tensor=sizes[2], batch_shards=batch_shards)
    grpo = build.grpo_config(config) if job == "grpo" else None
    optim_cfg, frozen = config.optim, build.frozen_dtype(config)
    adapters_of = build.lora_spec(config)
    lora_count = 0 if adapters_of is None or not train else sum(x.size for x in jax.tree.leaves(
        jax.eval_shape(lambda: lora.init_adapters(module, adapters_of, jax.random.key(0)))))
    arithmetic = analytic.breakdown(
        cfg, shape, param_bytes=param_dtype.itemsize, compute_bytes=compute_dtype.itemsize, remat=m.remat,
        vision_remat=m.vision_remat, train=train, beta=grpo.beta if grpo else 0.0,
        freeze_vision=optim_cfg.freeze_vision and train, freeze_merger=optim_cfg.freeze_merger and train,
        accumulation=accumulation * shape.completion_chunks,
        frozen_bytes=None if frozen is None else frozen.itemsize, lora_params=lora_count)
    per_process = shapes.prompt_batch(prompt, spec, max(1, config.data.batch_size), buckets)
    state = arithmetic["params"] + arithmetic.get("optimizer state", 0)
    host = analytic.host_bytes(batch_bytes=device_bytes(per_process), worker_count=data.worker_count,
                               state_bytes_per_device=state if train else 0,
                               local_devices=max(1, len(devices) // plan_cfg.processes))
    return Plan(job=job, platform=platform, devices=len(devices), mesh=dict(zip(sharding.MESH_AXES, sizes)),
                prompt=prompt, shape=shape, programs=programs, arithmetic=arithmetic, host=host,
                usable_bytes=plan_cfg.usable_bytes(platform), device_memory_bytes=plan_cfg.device_memory_gb * 1e9,
                notes=notes)


def _shape(batch: dict, completions: int, completion_slots: int) -> analytic.Shape:
    b, tp = batch["input_ids"].shape
    patch_rows = sum(batch[k]["pixel_values"].shape[0] for k in ("image", "video") if batch.get(k) is not None)
    return analytic.Shape(prompts=b, prompt_slots=tp, completions=completions, completion_slots=completion_slots,
                          patch_rows=patch_rows, batch_shards=1, model_shards=1)


def _train_programs(config, plan_cfg, module, params, mesh, prompt, spec, buckets):
    """GRPO's or SFT's programs, with what each holds besides its arguments."""
    job = plan_cfg.job
    # The schedule does not change memory; SFT recipes leave max_steps 0 (= their epochs).
    optimizer_cfg = build.optimizer_config(config, total_steps=config.max_steps or 1000)
    optimizer = optim.make_optimizer(optimizer_cfg)
    frozen = build.frozen_dtype(config)  # the frozen towers and the reference, as the jobs store them
    lora_spec = build.lora_spec(config)
    base = None
    if lora_spec is not None:  # LoRA: the whole base frozen, the adapters (replicated) train
        base = params if frozen is None else jax.tree.map(lambda p: optim.cast_floating(p, frozen), params)
        params = jax.eval_shape(lambda: lora.init_adapters(module, lora_spec, jax.random.key(0)))
        if mesh is not None:
            params = with_shardings(params, jax.tree.map(lambda _: NamedSharding(mesh, P()), params))
    else:
        params = optim.frozen_as(params, frozen, optimizer_cfg.freeze_vision, optimizer_cfg.freeze_merger)
    opt_state = jax.eval_shape(optimizer.init, params)
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        opt_state = with_shardings(opt_state, optimizer_layout(opt_state, params, replicated))
    p_bytes, o_bytes = device_bytes(params), device_bytes(opt_state)
    base_bytes = 0 if base is None else device_bytes(base)
    # What the job holds besides the trained params and their optimizer state: LoRA's frozen base,
    # and while it samples, the merged policy it samples with (one more copy of the base).
    frozen_held = (("base params", base_bytes),) if base is not None else ()
    policy = params if base is None else base  # the weights the sampler and the log-prob passes run
    accumulation = config.gradient_accumulation_steps
    batch = shapes.prompt_batch(prompt, spec, config.data.batch_size * plan_cfg.processes, buckets)
    prompts = prompt_arrays(batch, mesh)
    b = batch["input_ids"].shape[0]
    programs: list[Program] = []
    if job == "grpo":
        grpo = build.grpo_config(config)
        g, tc = grpo.num_generations, grpo.max_completion_length
        n, micro_count = b * grpo.completions_per_chunk, accumulation * grpo.completion_chunks
        if base is not None:
            reference, ref_bytes = base, 0  # the reference is the base itself
        else:
            reference = params if frozen is None else jax.tree.map(lambda p: optim.cast_floating(p, frozen), params)
            ref_bytes = device_bytes(reference) if grpo.beta > 0 else 0
        merged = (("merged policy", base_bytes),) if base is not None else ()
        programs += sampler_programs(
            module, policy, batch, mesh, generations=g, max_new=tc, eos=(0,),
            sampling=SamplingParams(grpo.temperature, grpo.top_p, grpo.top_k),
            held=(("params", p_bytes), ("optimizer state", o_bytes), ("reference params", ref_bytes), *frozen_held,
                  *merged), tag="rollout: ")
        per_row = lambda dtype, axis=0, shape=None: rows(shape or (n, tc), dtype, mesh, axis)  # noqa: E731
        micro = GRPOMicroBatch(batch=prompts, tokens=per_row(jnp.int32), mask=per_row(jnp.bool_),
                               positions=per_row(jnp.int32, 1, (3, n, tc)), sampler_logp=per_row(jnp.float32),
                               advantages=per_row(jnp.float32, 0, (n,)), row_mask=per_row(jnp.bool_, 0, (n,)),
                               old_logp=per_row(jnp.float32), ref_logp=per_row(jnp.float32) if grpo.beta > 0 else None)
        if grpo.beta > 0:
            logprobs = jax.jit(functools.partial(rollout_logprobs, module, num_generations=grpo.completions_per_chunk,
                                                 temperature=grpo.temperature))
            program, _ = compile_program("reference log-probs", logprobs, reference, micro, other_inputs=micro,
                                         held=(("params", p_bytes), ("optimizer state", o_bytes),
                                               ("reference params", ref_bytes), *frozen_held))
            programs.append(program)
        loss_module = module if lora_spec is None else lora.wrap(module, lora_spec)
        loss_fn, completions, slots, chunks = GRPOLoss(loss_module, grpo), b * g, tc, grpo.completion_chunks
    else:
        answer = config.sft.max_answer_length or config.grpo.max_completion_length
        slots = bucket_size(answer, sizes=tuple(config.sft.bucket_lengths) or None)
        micro = SFTMicroBatch(batch=prompts, answers={"targets": rows((b, slots), jnp.int32, mesh),
                                                      "target_mask": rows((b, slots), jnp.bool_, mesh)})
        loss_module = module if lora_spec is None else lora.wrap(module, lora_spec)
        loss_fn, completions, ref_bytes, micro_count, chunks = SFTLoss(loss_module), b, 0, accumulation, 1
    micro_bytes = device_bytes(micro)
    programs += learner_programs(
        params, micro, mesh, loss_fn=loss_fn, optimizer=optimizer, freeze_vision=optimizer_cfg.freeze_vision,
        freeze_merger=optimizer_cfg.freeze_merger, opt_state=opt_state,
        held_grads=(("params", p_bytes), ("optimizer state", o_bytes), ("reference params", ref_bytes),
                    ("gradient sum", p_bytes if micro_count > 1 else 0),
                    ("the step's other micro-batches", (micro_count - 1) * micro_bytes), *frozen_held),
        held_apply=(("params", p_bytes), ("optimizer state", o_bytes), ("reference params", ref_bytes),
                    *frozen_held), base=base)
    return programs, dataclasses.replace(_shape(batch, completions, slots), completion_chunks=chunks)


def _score_programs(config, module, params, mesh, prompt, spec, buckets, batch_shards):
    """The scoring job's sampler calls (mmjax.difficulty.scoring.Scorer's three kinds)."""
    s = config.score
    up = lambda n: -(-max(1, n) // batch_shards) * batch_shards  # noqa: E731  rows split over the mesh
    calls = (("pism x1: ", up(s.sampler_batch), 1, SamplingParams(s.temperature, s.top_p, s.top_k), False),
             (f"pism x{s.attempts}: ", up(s.sampler_batch // s.attempts), s.attempts,
              SamplingParams(s.temperature, s.top_p, s.top_k), False),
             ("cmab: ", up(s.cmab_batch), 1, SamplingParams(s.cmab_temperature), True))
    programs, largest = [], None
    for tag, prompts, g, sampling, capture in calls:
        if capture and "cmab" not in s.methods or not capture and "pism" not in s.methods:
            continue
        batch = shapes.prompt_batch(prompt, spec, prompts, buckets)
        programs += sampler_programs(module, params, batch, mesh, generations=g, max_new=s.max_new_tokens,
                                     sampling=sampling, eos=(0,), capture=capture, tag=tag,
                                     held=(("params", device_bytes(params)),))
        shape = _shape(batch, prompts * g, s.max_new_tokens)
        tokens = lambda sh: sh.completions * sh.completion_slots  # noqa: E731
        if largest is None or tokens(shape) > tokens(largest):
            largest = shape
    return programs, largest
