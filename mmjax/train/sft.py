"""The device side of an SFT step: cross-entropy on the answer tokens, as exact (sum, count).

    grads, stats = microbatch_grads(module, params, batch, answers)     # per micro-batch
    params, opt_state, grad_norm = update.apply_update(tx, params, opt_state, grad_sum, stats["loss"].count)

An SFT batch has the shape of a GRPO rollout with one completion per prompt: the prompt
batch (left-padded ids, positions, vision tables) and the answer as completion tokens with
their mask (`mmjax.data.sft.SftBatcher`). The loss is

    -sum(log p(answer token | prompt, earlier answer tokens) * mask) / sum(mask)

through the same differentiable `completion_logprobs` the GRPO update uses: only completion
positions ever reach the head, so prompt, image and padding tokens carry no loss by
construction, and the head runs in float32 chunks. The loss is the token mean over the
whole optimizer step (TRL SFTTrainer / HF Trainer with `num_items_in_batch`): each
micro-batch returns the gradient of its numerator and the (sum, count) pair, the learner
adds them and `mmjax.rl.update.apply_update` (shared with GRPO) divides once.

Frozen sub-trees (`OptimizerConfig.freeze_vision` / `freeze_merger`) get no update from
the optimiser; here they are also cut from the backward pass (`stop_gradient`), so with
the vision tower frozen its backward is never computed.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from mmjax.rl.losses import Weighted
from mmjax.train import optim


def loss_sums(module, params, batch, answers: dict[str, Any], with_entropy: bool = False):
    """(Weighted(sum of -log p over answer tokens, number of answer tokens), entropy or None).

    answers: {"targets": int32 [B, Tc], "target_mask": bool [B, Tc]} (the SftBatcher's keys).
    """
    mask = answers["target_mask"]
    lp, ent = completion_logprobs(module, params, batch, answers["targets"], mask, with_entropy=with_entropy)
    return Weighted(-jnp.sum(lp), jnp.sum(mask, dtype=jnp.int32)), ent


def microbatch_grads(module, params, batch, answers: dict[str, Any], *, freeze_vision: bool = False,
                     freeze_merger: bool = False, param_shardings=None):
    """(grads of the loss numerator, {"loss", "entropy": Weighted}) for one micro-batch.

    freeze_vision / freeze_merger: as the OptimizerConfig's (their grads are zeros)."""
    def numerator(p):
        loss, ent = loss_sums(module, optim.stop_frozen(p, freeze_vision, freeze_merger), batch, answers,
                              with_entropy=True)
        return loss.total, (loss, ent)

    (_, (loss, ent)), grads = jax.value_and_grad(numerator, has_aux=True)(params)
    if param_shardings is not None:  # GSPMD would otherwise lay grads out as it likes
        grads = jax.lax.with_sharding_constraint(grads, param_shardings)
    entropy = Weighted(jnp.sum(jax.lax.stop_gradient(ent)), loss.count)
    return grads, {"loss": loss, "entropy": entropy}
