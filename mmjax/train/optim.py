"""The learner's optimiser: optax AdamW behind global-norm clipping, a learning-rate
schedule, weight-decay masking and frozen sub-trees, built from one frozen config.

    tx = optim.make_optimizer(optim.OptimizerConfig(learning_rate=5e-7))
    opt_state = tx.init(params)                      # params must be float32 master weights
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)

Choices, and why:
- Weight decay (decoupled, AdamW) applies to kernels and embeddings only, never to biases
  or norm scales (leaves named "bias" / "scale"). That is what HF Trainer's
  `get_decay_parameter_names` means to do; its name patterns miss Qwen2.5-VL's vision
  `norm1` / `norm2` / merger `ln_q` RMSNorms (HF decays those), mmjax does not.
- Frozen sub-trees (`freeze_vision`: params["visual"] but its merger, `freeze_merger`:
  params["visual"]["merger"]) go through `optax.set_to_zero` inside `optax.multi_transform`,
  so they get zero updates and NO Adam moments (a 7B model's vision tower is ~0.7B params,
  i.e. ~5.6 GB of float32 moments saved). Gradient clipping sees only the trainable
  gradients, as in PyTorch, where frozen params have no .grad.
- Master weights: params and Adam moments are float32 even when the model computes in
  bfloat16 (`Qwen2_5_VL.from_config(..., dtype=float32, compute_dtype=bfloat16)`);
  `init` refuses non-float32 floating trainable params instead of silently keeping bf16
  moments. Frozen leaves may be stored in bfloat16 (`frozen_as`): they never update.
- Step counting follows HF: the first update uses the schedule's value at step 0 (0 with
  a warmup), warmup is linear from 0, cosine decays to 0 at `total_steps`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from mmjax.config_help import choice_errors, help_text

SCHEDULES = ("constant", "cosine", "linear")
TRAINABLE, FROZEN = "trainable", "frozen"
NO_DECAY_LEAVES = ("bias", "scale")  # Flax names of biases and (RMS/Layer)Norm weights


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW + schedule + clipping + freezing. Defaults: the Visual Jigsaw GRPO recipe (SPEC 1.6)."""

    learning_rate: float = dataclasses.field(default=1e-6, metadata=help_text(
        "peak learning rate; SPEC 1.6 (Visual Jigsaw GRPO) and TRL GRPOConfig default 1e-6, SPEC 2.4 GRPO 5e-7"))
    schedule: str = dataclasses.field(default="constant", metadata=help_text(
        "constant | cosine | linear (after the warmup); SPEC 1.6 constant, SPEC 2.4 SFT cosine, "
        "HF TrainingArguments.lr_scheduler_type", choices=SCHEDULES))
    warmup_ratio: float = dataclasses.field(default=0.0, metadata=help_text(
        "warmup length as a fraction of total_steps, ceil-rounded as HF get_warmup_steps; SPEC 2.4 SFT 0.1"))
    warmup_steps: int = dataclasses.field(default=0, metadata=help_text(
        "warmup length in steps (HF TrainingArguments.warmup_steps); set this or warmup_ratio, not both"))
    total_steps: int | None = dataclasses.field(default=None, metadata=help_text(
        "number of optimizer updates; needed by cosine / linear and by warmup_ratio (HF max_steps)"))
    weight_decay: float = dataclasses.field(default=0.01, metadata=help_text(
        "decoupled AdamW weight decay on kernels / embeddings; SPEC 1.6 0.01 (HF default 0.0)"))
    b1: float = dataclasses.field(default=0.9, metadata=help_text("Adam beta1; HF TrainingArguments.adam_beta1"))
    b2: float = dataclasses.field(default=0.999, metadata=help_text("Adam beta2; HF TrainingArguments.adam_beta2"))
    eps: float = dataclasses.field(default=1e-8, metadata=help_text("Adam epsilon; HF TrainingArguments.adam_epsilon"))
    max_grad_norm: float | None = dataclasses.field(default=1.0, metadata=help_text(
        "clip the trainable gradients' global norm to this (None or 0: no clipping); SPEC 1.6 1.0, "
        "HF TrainingArguments.max_grad_norm 1.0"))
    freeze_vision: bool = dataclasses.field(default=False, metadata=help_text(
        "no updates (and no optimizer state) for the vision tower params['visual'] but its merger; "
        "SPEC 2.4 SFT freezes it"))
    freeze_merger: bool = dataclasses.field(default=False, metadata=help_text(
        "no updates (and no optimizer state) for the projector params['visual']['merger']; SPEC 2.4 SFT freezes it"))

    def __post_init__(self):
        errors = choice_errors(self)  # schedule
        if not self.learning_rate >= 0:
            errors.append(f"learning_rate={self.learning_rate}: must be >= 0")
        if not 0 <= self.warmup_ratio < 1:
            errors.append(f"warmup_ratio={self.warmup_ratio}: must be in [0, 1)")
        if self.warmup_steps < 0:
            errors.append(f"warmup_steps={self.warmup_steps}: must be >= 0")
        if self.warmup_steps and self.warmup_ratio:
            errors.append(f"warmup_steps={self.warmup_steps} and warmup_ratio={self.warmup_ratio}: set one")
        if self.total_steps is not None and self.total_steps < 1:
            errors.append(f"total_steps={self.total_steps}: must be >= 1")
        if self.total_steps is None and (self.schedule != "constant" or self.warmup_ratio):
            why = f"schedule={self.schedule!r}" if self.schedule != "constant" else "warmup_ratio"
            errors.append(f"total_steps is required by {why}")
        if self.total_steps is not None and self.schedule != "constant" and self.warmup() >= self.total_steps:
            errors.append(f"warmup of {self.warmup()} steps leaves no {self.schedule} decay in "
                          f"total_steps={self.total_steps}")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)}: must be in [0, 1)")
        if not self.eps > 0:
            errors.append(f"eps={self.eps}: must be > 0")
        if not self.weight_decay >= 0:
            errors.append(f"weight_decay={self.weight_decay}: must be >= 0")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            errors.append(f"max_grad_norm={self.max_grad_norm}: must be >= 0 (0 or None: no clipping)")
        if errors:
            raise ValueError("OptimizerConfig: " + "; ".join(errors))

    def warmup(self) -> int:
        """Warmup length in steps (HF `get_warmup_steps`: a ratio is rounded up)."""
        if self.warmup_ratio:
            return math.ceil(self.total_steps * self.warmup_ratio)
        return self.warmup_steps


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Step -> learning rate: linear warmup from 0, then constant / cosine to 0 / linear to 0."""
    lr, warmup = config.learning_rate, config.warmup()
    if config.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, config.total_steps - warmup, alpha=0.0)
    else:
        after = optax.linear_schedule(lr, 0.0, config.total_steps - warmup)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _path(keys) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keys)


def _map_paths(fn, tree) -> Any:
    """fn(path as a tuple of key names, leaf) over the leaves (optax's MaskedNodes have none)."""
    return jax.tree_util.tree_map_with_path(lambda keys, leaf: fn(_path(keys), leaf), tree)


def decay_mask(params) -> Any:
    """True where AdamW decays the leaf: everything but biases and norm scales."""
    return _map_paths(lambda path, _: path[-1] not in NO_DECAY_LEAVES, params)


def _frozen(path: tuple[str, ...], config: OptimizerConfig) -> bool:
    if path[:1] != ("visual",):
        return False
    in_merger = path[1:2] == ("merger",)
    return config.freeze_merger if in_merger else config.freeze_vision


def param_labels(params, config: OptimizerConfig) -> Any:
    """TRAINABLE / FROZEN per leaf, from the config's freeze flags."""
    if (config.freeze_vision or config.freeze_merger) and "visual" not in params:
        raise ValueError(f"freeze_vision / freeze_merger: params have no 'visual' sub-tree "
                         f"(top-level keys {sorted(params)})")
    if config.freeze_merger and "merger" not in params["visual"]:
        raise ValueError(f"freeze_merger: params['visual'] has no 'merger' (keys {sorted(params['visual'])})")
    return _map_paths(lambda path, _: FROZEN if _frozen(path, config) else TRAINABLE, params)


def _check_master_weights(params, config: OptimizerConfig) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    bad = [("/".join(_path(keys)), jnp.dtype(leaf.dtype).name) for keys, leaf in leaves
           if jnp.issubdtype(leaf.dtype, jnp.floating) and jnp.dtype(leaf.dtype) != jnp.float32
           and not _frozen(_path(keys), config)]  # frozen leaves never update: any dtype keeps them
    if bad:
        raise TypeError(f"optimizer params must be float32 master weights, got {bad[:3]}"
                        f"{' and more' if len(bad) > 3 else ''}: build the model with dtype=float32 and "
                        f"compute_dtype=bfloat16 instead of storing bfloat16 params")


def _trainable_tx(config: OptimizerConfig) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps,
                        weight_decay=config.weight_decay, mask=decay_mask, mu_dtype=jnp.float32)
    if not config.max_grad_norm:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformationExtraArgs:
    """The learner's GradientTransformation; its `init` checks the params are float32."""
    tx = _trainable_tx(config)
    if config.freeze_vision or config.freeze_merger:
        # set_to_zero keeps no state, and multi_transform hands the AdamW branch a tree
        # where frozen leaves are empty MaskedNodes: no moments exist for them at all.
        tx = optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()},
                                   lambda params: param_labels(params, config))

    def init(params):
        _check_master_weights(params, config)
        return tx.init(params)

    return optax.GradientTransformationExtraArgs(init, tx.update)


def state_bytes(opt_state) -> int:
    """Bytes held by the optimizer state's arrays (what a checkpoint of it costs)."""
    return sum(leaf.size * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(opt_state)
               if hasattr(leaf, "dtype"))


def frozen_as(params, dtype, freeze_vision: bool = False, freeze_merger: bool = False):
    """params with the frozen floating leaves (by `param_labels`) stored in `dtype` (None: as they are).

    A frozen leaf never updates, so it needs no float32 master copy: bfloat16 halves it, and
    from a bfloat16 checkpoint (Qwen2.5-VL's releases are) the cast is exact. Arrays are cast
    where they lie; abstract leaves (`jax.ShapeDtypeStruct`, the planner's) keep their sharding."""
    if dtype is None or not (freeze_vision or freeze_merger):
        return params
    labels = param_labels(params, OptimizerConfig(freeze_vision=freeze_vision, freeze_merger=freeze_merger))
    return jax.tree.map(lambda p, label: cast_floating(p, dtype) if label == FROZEN else p, params, labels)


def cast_floating(leaf, dtype):
    """A floating array (or abstract array) in `dtype`; any other leaf as it is."""
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        return leaf
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape, jnp.dtype(dtype), sharding=leaf.sharding)
    return leaf.astype(dtype)


def stop_frozen(params, freeze_vision: bool = False, freeze_merger: bool = False):
    """params with the frozen leaves (by `param_labels`) under stop_gradient.

    The optimiser already leaves frozen leaves alone; cutting them from the backward pass as
    well means a frozen vision tower's backward is never computed (its gradients are zeros).
    """
    if not (freeze_vision or freeze_merger):
        return params
    labels = param_labels(params, OptimizerConfig(freeze_vision=freeze_vision, freeze_merger=freeze_merger))
    return jax.tree.map(lambda p, label: jax.lax.stop_gradient(p) if label == FROZEN else p, params, labels)
