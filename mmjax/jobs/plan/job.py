"""The planning job (`config.mode = "plan"`): compile a recipe for its target mesh and say whether it fits.

    python -m mmjax.main --config configs/difficulty_grpo.py --config.mode=plan \
        [--config.plan.devices=8] [--config.plan.device_memory_gb=80] [--config.plan.platform=gpu]

No weights are read and no array is allocated: the job's own jitted programs are compiled for
abstract inputs of the worst case the recipe allows (mmjax.jobs.plan). On a CPU host the devices
are virtual (`jax_num_cpu_devices`, set before JAX starts its backends); on an accelerator host
with enough devices, the real ones. Writes `W/plan.md` and `W/plan.json` and prints the table.
When the recipe does not fit and `plan.propose` is on, overrides that lower the peak are
planned again one at a time (mmjax.jobs.plan.proposals) until one fits.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from mmjax.jobs import build
from mmjax.jobs.plan import proposals as proposals_lib
from mmjax.jobs.plan import report
from mmjax.jobs.plan.options import PlanConfig
from mmjax.jobs.plan.planner import make_plan

log = logging.getLogger(__name__)
DEFAULT_DEVICES = 8  # a mesh axis of -1 on a planning host: one 8-GPU host
CPU_MEMORY_SCHEDULER = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def target_devices(config, plan_cfg: PlanConfig) -> int:
    """plan.devices, else the mesh's own size (a -1 axis counted as DEFAULT_DEVICES over the others)."""
    if plan_cfg.devices:
        return plan_cfg.devices
    sizes = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    return int(np.prod([DEFAULT_DEVICES if s == -1 else s for s in sizes]))


def devices_for(n: int) -> list:
    """`n` devices to compile for: the accelerator's when it has that many, else virtual CPU devices."""
    from jax._src import xla_bridge  # the only way to ask whether the backends have started
    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_num_cpu_devices", n)
        # XLA:CPU's default scheduler favours concurrency and places a remat'd layer's recompute
        # early, which keeps what remat frees; the memory-optimised one schedules as an
        # accelerator's memory-first scheduler does (a 16-layer bf16 toy: remat 1250 -> 814 MB).
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_MEMORY_SCHEDULER}".strip()
    if jax.default_backend() != "cpu" and jax.device_count() >= n:
        return jax.devices()[:n]
    cpu = jax.devices("cpu")
    if len(cpu) < n:
        raise build.ConfigFieldError(
            f"config.plan.devices={n}: JAX started with {len(cpu)} CPU devices before the planner could ask for "
            f"{n}; run the plan in a process of its own (python -m mmjax.main ... --config.mode=plan)")
    return cpu[:n]


def platform_of(plan_cfg: PlanConfig) -> str:
    """plan.platform, with auto = this host's accelerator, or a GPU when planning on a CPU."""
    if plan_cfg.platform != "auto":
        return plan_cfg.platform
    return jax.default_backend() if jax.default_backend() in ("gpu", "tpu") else "gpu"


def plan_with_proposals(config, plan_cfg: PlanConfig, devices: list, platform: str):
    """(the plan, [(change, overrides, its plan)] for the proposals tried)."""
    plan = make_plan(config, plan_cfg, devices, platform)
    tried = []
    if not plan.fits() and plan_cfg.propose:
        for text, overrides in proposals_lib.ladder(config, plan_cfg, len(devices))[:plan_cfg.max_proposals]:
            log.warning("plan: %s; planning again with %s", "does not fit" if not plan.failed() else "fails",
                        proposals_lib.as_flags(overrides))
            again = make_plan(proposals_lib.apply(config, overrides), plan_cfg, devices, platform)
            tried.append((text, overrides, again))
            if again.fits():
                break
    return plan, tried


def run(config, workdir: str) -> dict:
    plan_cfg = build.dataclass_from(PlanConfig, config.plan, "plan")
    devices = devices_for(target_devices(config, plan_cfg))
    platform = platform_of(plan_cfg)
    title = f"{config.model.preset if not config.model.hf_dir else config.model.hf_dir} {plan_cfg.job} recipe"
    plan, tried = plan_with_proposals(config, plan_cfg, devices, platform)
    md, js = report.write(workdir, title, plan, tried)
    print(report.markdown(title, plan, tried))
    log.info("plan: %s and %s", md, js)
    return {"fits": plan.fits(), "peak_bytes": plan.peak_bytes(), "usable_bytes": plan.usable_bytes}
