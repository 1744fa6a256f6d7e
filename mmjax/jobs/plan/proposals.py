"""Overrides that lower a job's per-device peak, tried in order, each on top of the ones before.

For training jobs (GRPO, SFT), in the order they cost the least throughput:
  1. store what never updates in bfloat16 (model.frozen_dtype: GRPO's reference params when
     beta > 0, the towers optim.freeze_vision / freeze_merger freeze): no cost, and exact from a
     bfloat16 checkpoint;
  2. shard params, gradients and optimizer state over more devices (mesh.fsdp);
  3. remat "full" on the decoder layers and the ViT blocks;
  4. halve the micro-batch and double gradient_accumulation_steps (the step's batch stays:
     exact (sum, count) accumulation makes the loss the same), while the prompts still split
     evenly over the mesh's batch axes (the sampler places prompt rows there); where they would
     not, first move a factor 2 of fsdp to tensor (params stay as sharded, rows split less);
  5. GRPO, once neither applies: split each prompt's G completions into twice as many update
     micro-batches (grpo.completion_chunks; exact as 4, but each chunk runs the prompt again).
For the scoring job: shard its params (fsdp), then halve its sampler calls.
Not proposed: bfloat16 trainable params (mmjax.train.optim refuses them: float32 master weights
keep 1e-6 updates from rounding away).
"""

from __future__ import annotations

from typing import Any

from mmjax.jobs.plan.planner import mesh_sizes, model_config


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def ladder(config, plan_cfg, devices: int) -> list[tuple[str, dict[str, Any]]]:
    """[(what it changes, {dotted field: value})], each rung including the ones before it."""
    data, fsdp, tensor = mesh_sizes(config, devices)
    prompts = config.data.batch_size * plan_cfg.processes
    rungs: list[tuple[str, dict[str, Any]]] = []
    # The widest FSDP the devices and the prompt rows allow (rows split over data x fsdp).
    rows = prompts if plan_cfg.job != "score" else max(config.score.sampler_batch, 1)
    wider = next((f for f in _divisors_desc(devices // tensor) if rows % f == 0), 1)
    if plan_cfg.job != "score" and not config.model.get("frozen_dtype", "") and config.model.dtype != "bfloat16":
        frozen = (plan_cfg.job == "grpo" and config.grpo.beta > 0) or config.optim.freeze_vision \
            or config.optim.freeze_merger
        if frozen:
            rungs.append(("model.frozen_dtype=bfloat16", {"model.frozen_dtype": "bfloat16"}))
    if wider > fsdp or data > 1:
        rungs.append((f"mesh.data=1, mesh.fsdp={wider}", {"mesh.data": 1, "mesh.fsdp": wider}))
        fsdp, data = wider, 1
    if plan_cfg.job == "score":
        batch, cmab = config.score.sampler_batch, config.score.cmab_batch
        while batch > fsdp * data and len(rungs) < 8:
            batch, cmab = batch // 2, max(1, cmab // 2)
            rungs.append((f"score.sampler_batch={batch}, score.cmab_batch={cmab}",
                          {"score.sampler_batch": batch, "score.cmab_batch": cmab}))
    else:
        if config.model.remat != "full" or config.model.vision_remat != "full":
            rungs.append(("model.remat=full, model.vision_remat=full",
                          {"model.remat": "full", "model.vision_remat": "full"}))
        batch, accumulation = config.data.batch_size, config.gradient_accumulation_steps
        kv_heads = model_config(config).text.num_key_value_heads
        g, chunks = config.grpo.num_generations, config.grpo.completion_chunks
        while len(rungs) < 8:
            if batch > 1 and (batch // 2 * plan_cfg.processes) % (fsdp * data) == 0:
                batch, accumulation = batch // 2, accumulation * 2
                rungs.append((f"data.batch_size={batch}, gradient_accumulation_steps={accumulation}",
                              {"data.batch_size": batch, "gradient_accumulation_steps": accumulation}))
            elif batch > 1 and fsdp % 2 == 0 and kv_heads % (2 * tensor) == 0:
                # Fewer rows' shards, the same params' shards: a factor 2 of fsdp moves to tensor, so
                # the next halving still splits the prompts evenly.
                fsdp, tensor = fsdp // 2, tensor * 2
                rungs.append((f"mesh.fsdp={fsdp}, mesh.tensor={tensor}", {"mesh.fsdp": fsdp, "mesh.tensor": tensor}))
            elif plan_cfg.job == "grpo" and (g // chunks) % 2 == 0:
                chunks *= 2
                rungs.append((f"grpo.completion_chunks={chunks}", {"grpo.completion_chunks": chunks}))
            else:
                break
    out, merged = [], {}
    for text, overrides in rungs:
        merged = {**merged, **overrides}
        out.append((text, dict(merged)))
    return out


def apply(config, overrides: dict[str, Any]):
    """A copy of `config` with the dotted fields set."""
    out = config.copy_and_resolve_references()
    with out.unlocked():
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = out
            for name in parents:
                node = node[name]
            node[leaf] = value
    return out


def as_flags(overrides: dict[str, Any]) -> str:
    """The overrides as command-line flags."""
    return " ".join(f"--config.{k}={v}" for k, v in overrides.items())
