"""The device side of every training step: one micro-batch's gradients, and the update.

`microbatch_grads` returns the gradient of an objective's loss numerator and its (sum, count)
statistics, never a mean; the trainer adds them over micro-batches (the mesh adds them over
devices) and `apply_update` divides once by the summed denominator (mmjax.train.weighted),
so every loss is its full-batch value whatever the split.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from mmjax import sharding
from mmjax.models import lora
from mmjax.train import optim


# Jitted once per process with the loss (a hashable description of it: module and configs)
# and the mesh static, so trainers of the same model and settings (a resumed run, tests)
# share their compiled programs.
@functools.partial(jax.jit, static_argnames=("loss_fn", "freeze_vision", "freeze_merger", "mesh"))
def microbatch_grads(params, micro, base=None, *, loss_fn, freeze_vision: bool = False, freeze_merger: bool = False,
                     mesh=None):
    """(grads of loss_fn's numerator, {"loss": Weighted, name: Weighted | Max}) for one micro-batch.

    loss_fn(params, micro) -> (Weighted loss, {name: Weighted | Max}). freeze_vision /
    freeze_merger: as the OptimizerConfig's; those grads are zeros and their backward pass is
    not computed. base: with LoRA (mmjax.models.lora), the frozen base params and `params` the
    adapters: the loss sees both, the gradient is the adapters' alone (no base-sized buffer).
    """
    def numerator(p):
        if base is not None:
            p = lora.combined(base, p)
        loss, metrics = loss_fn(optim.stop_frozen(p, freeze_vision, freeze_merger), micro)
        return loss.total, (loss, metrics)

    (_, (loss, metrics)), grads = jax.value_and_grad(numerator, has_aux=True)(params)
    if mesh is not None and base is None:  # GSPMD would otherwise lay grads out as it likes (adapters: replicated)
        from mmjax.models.qwen2_5_vl.params import abstract_params, logical_axes
        config = loss_fn.module.cfg
        grads = jax.lax.with_sharding_constraint(
            grads, sharding.param_shardings(abstract_params(config), logical_axes(config), mesh))
    return grads, {"loss": loss, **metrics}


def apply_update(optimizer: optax.GradientTransformation, params, opt_state, grad_sums, denominator):
    """Divide the summed numerator gradients once, then one optimizer step.

    Returns (params, opt_state, grad_norm) with grad_norm of the divided gradients (before
    clipping, as TRL logs it)."""
    grads = jax.tree.map(lambda g: g / jnp.maximum(denominator, 1).astype(g.dtype), grad_sums)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)
