"""SFT as a Trainer objective: cross-entropy on the answer tokens, as exact (sum, count).

An SFT batch has the shape of a GRPO rollout with one completion per prompt: the prompt
batch (left-padded ids, positions, vision tables) and the answer as completion tokens with
their mask (`mmjax.data.sft.SftBatcher`). The loss is

    -sum(log p(answer token | prompt, earlier answer tokens) * mask) / sum(mask)

through the same differentiable `completion_logprobs` the GRPO update uses: only completion
positions reach the head, so prompt, image and padding tokens carry no loss by construction.
It is the token mean over the whole optimizer step (TRL SFTTrainer / HF Trainer with
`num_items_in_batch`): the Trainer adds every micro-batch's numerator gradients and (sum,
count) pairs and divides once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import sharding
from mmjax.data.batching import arrays
from mmjax.models import lora as lora_lib
from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
from mmjax.train.weighted import Weighted

ANSWER_KEYS = ("targets", "target_mask")  # what mmjax.data.sft.SftBatcher adds


def loss_sums(module, params, batch, answers: dict[str, Any], with_entropy: bool = False):
    """(Weighted(sum of -log p over answer tokens, number of answer tokens), entropy or None).

    answers: {"targets": int32 [B, Tc], "target_mask": bool [B, Tc]} (the SftBatcher's keys).
    """
    mask = answers["target_mask"]
    lp, ent = completion_logprobs(module, params, batch, answers["targets"], mask, with_entropy=with_entropy)
    return Weighted(-jnp.sum(lp), jnp.sum(mask, dtype=jnp.int32)), ent


@dataclasses.dataclass(frozen=True)
class SFTLoss:
    """The SFT loss of one micro-batch: (Weighted cross-entropy, {"entropy": Weighted})."""
    module: Any

    def __call__(self, params, micro: "SFTMicroBatch"):
        loss, ent = loss_sums(self.module, params, micro.batch, micro.answers, with_entropy=True)
        return loss, {"entropy": Weighted(jnp.sum(jax.lax.stop_gradient(ent)), loss.count)}


@flax.struct.dataclass
class SFTMicroBatch:
    """One micro-batch on the device: the prompt batch and the answers it is trained on."""
    batch: dict[str, Any]     # the device part of the pipeline batch
    answers: dict[str, Any]   # targets, target_mask


@flax.struct.dataclass
class SFTExample:
    """One optimizer step of SFT: its micro-batches and what the metrics read of them."""
    micro_batches: tuple[SFTMicroBatch, ...]
    epochs: tuple[int, ...] = flax.struct.field(pytree_node=False)  # 0-based pass over the data, per row
    prompt_tokens: int = flax.struct.field(pytree_node=False)
    answer_tokens: int = flax.struct.field(pytree_node=False)


class SFTObjective:
    """Cross-entropy on the answer tokens of `SftBatcher` batches (`mmjax.train.trainer.Objective`).

    skips: the pipeline's running skip counts (`mmjax.data.pipeline.skip_counter`), logged
    as data/skipped/*, or None.
    """

    name = "SFT"
    updates_per_example = 1
    cumulative: tuple[str, ...] = ()

    def __init__(self, module, *, pad_token_id: int, mesh=None, skips=None, lora=None):
        # LoRA (a LoraSpec): the loss applies the adapters on the frozen base (the trainer joins them).
        self.loss_fn = SFTLoss(module if lora is None else lora_lib.wrap(module, lora))
        self.pad, self.mesh, self.skips = int(pad_token_id), mesh, skips

    def start(self, params) -> None:
        pass

    def prepare(self, params, batches: list[dict], step: int, more: Callable[[], dict]) -> SFTExample:
        micros, epochs = [], []
        for batch in batches:
            device, answers = self._on_devices(batch)
            micros.append(SFTMicroBatch(batch=device, answers=answers))
            epochs += [int(e) for e in batch["meta"]["epoch"]]
        return SFTExample(micro_batches=tuple(micros), epochs=tuple(epochs),
                          prompt_tokens=sum(int(np.asarray(b["attention_mask"]).sum()) for b in batches),
                          answer_tokens=sum(int(np.asarray(b["target_mask"]).sum()) for b in batches))

    def _on_devices(self, batch: dict) -> tuple[dict, dict]:
        """The prompt batch and the answers as device arrays; with a mesh, global arrays of all
        processes' rows (answers right-padded to the longest of any process)."""
        device = arrays(batch)
        answers = {k: np.asarray(batch[k]) for k in ANSWER_KEYS}
        if self.mesh is None:
            device = {k: jnp.asarray(v) if k in sharding.BATCH_AXIS else v for k, v in device.items()}
            return device, {k: jnp.asarray(v) for k, v in answers.items()}
        if jax.process_count() > 1:
            width = max(sharding.allgather_json(answers["targets"].shape[1]))
            answers = {k: np.pad(v, ((0, 0), (0, width - v.shape[1]))) for k, v in answers.items()}
        device = sharding.global_batch(device, self.mesh, pad_token_id=self.pad)
        return device, {k: sharding.global_rows(v, self.mesh, 0, name=k) for k, v in answers.items()}

    def metrics(self, example: SFTExample, stats: dict[str, float], step_time: float) -> dict[str, Any]:
        """Token counts, the data pass and skip counts of the global batch (all processes')."""
        mine = {"prompt": example.prompt_tokens, "answer": example.answer_tokens, "epoch": max(example.epochs)}
        everyone = sharding.allgather_json(mine)
        prompt, answer = sum(p["prompt"] for p in everyone), sum(p["answer"] for p in everyone)
        out: dict[str, Any] = {
            "tokens/prompt": prompt,
            "tokens/answer": answer,
            "tokens_per_second": (prompt + answer) / step_time,
            "data/epoch": max(p["epoch"] for p in everyone),
        }
        out.update(self.final_metrics())
        return out

    def final_metrics(self) -> dict[str, Any]:
        """Rows the pipelines skipped so far, by reason, summed over processes (running totals,
        restored on resume)."""
        skipped: dict[str, int] = {}
        for counts in sharding.allgather_json(dict(self.skips.counts) if self.skips is not None else {}):
            for reason, n in counts.items():
                skipped[reason] = skipped.get(reason, 0) + n
        out = {"data/skipped": sum(skipped.values())}
        out.update({f"data/skipped/{reason}": n for reason, n in sorted(skipped.items())})
        return out
