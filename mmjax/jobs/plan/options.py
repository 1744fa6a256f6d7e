"""config.plan: what `mode=plan` compiles for, and what it checks the result against."""

from __future__ import annotations

import dataclasses

from mmjax.config_help import help_text

JOBS = ("grpo", "sft", "score")
PLATFORMS = ("auto", "cpu", "gpu", "tpu")
# The share of a device's memory a JAX process may use, by target platform. GPU: XLA's client
# preallocates 75% of the memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION=.75, JAX's "GPU memory
# allocation" page); a run may raise it, the plan assumes the default. TPU: no preallocation cap,
# the runtime keeps a few percent (mmjax assumption: 5%). CPU: all of it.
USABLE_FRACTION = {"gpu": 0.75, "tpu": 0.95, "cpu": 1.0}


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """config.plan (mode "plan", mmjax.jobs.plan): the target the recipe is compiled for."""

    job: str = dataclasses.field(default="grpo", metadata=help_text(
        "the job whose programs are planned: the recipe's own mode (configs/sft.py and "
        "configs/difficulty_score.py set it; mmjax)", JOBS))
    devices: int = dataclasses.field(default=0, metadata=help_text(
        "devices of the target mesh; 0 = the mesh's own size (config.mesh, -1 axes = 8); on CPU "
        "these are virtual devices (mmjax)"))
    processes: int = dataclasses.field(default=1, metadata=help_text(
        "processes of the target job: data.batch_size is per process, so the global batch is "
        "batch_size x processes (a v5p-64 slice: 8; mmjax)"))
    device_memory_gb: float = dataclasses.field(default=80.0, metadata=help_text(
        "memory per device in GB (1e9 bytes); H100 / A100 80, H200 141, v5p 95 (mmjax)"))
    platform: str = dataclasses.field(default="auto", metadata=help_text(
        "the target: its attention kernels and usable memory; auto = gpu unless the recipe's mesh "
        "spans a TPU slice (mesh.fsdp=-1 with plan.processes > 1) (mmjax)", PLATFORMS))
    usable_fraction: float = dataclasses.field(default=0.0, metadata=help_text(
        "share of device memory a job may use; 0 = the platform's default (mmjax.jobs.plan.options."
        "USABLE_FRACTION: gpu 0.75, XLA's preallocation default; tpu 0.95; cpu 1.0)"))
    text_tokens: int = dataclasses.field(default=256, metadata=help_text(
        "text tokens of the worst-case prompt, besides its vision tokens (mmjax)"))
    propose: bool = dataclasses.field(default=True, metadata=help_text(
        "when it does not fit, try overrides that would make it fit, each planned again (mmjax)"))
    max_proposals: int = dataclasses.field(default=3, metadata=help_text(
        "proposals planned again at most; the first that fits ends the search (mmjax)"))

    def __post_init__(self):
        problems = []
        if self.devices < 0:
            problems.append(f"devices={self.devices} must be >= 0")
        if self.processes < 1:
            problems.append(f"processes={self.processes} must be >= 1")
        if self.device_memory_gb <= 0:
            problems.append(f"device_memory_gb={self.device_memory_gb} must be > 0")
        if not 0 <= self.usable_fraction <= 1:
            problems.append(f"usable_fraction={self.usable_fraction} must be in [0, 1] (0 = the platform's)")
        if self.text_tokens < 1:
            problems.append(f"text_tokens={self.text_tokens} must be >= 1")
        if problems:
            raise ValueError("config.plan: " + "; ".join(problems))

    def usable_bytes(self, platform: str) -> float:
        return self.device_memory_gb * 1e9 * (self.usable_fraction or USABLE_FRACTION[platform])
