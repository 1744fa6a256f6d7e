"""The GRPO job (`config.mode = "grpo"`): build the pieces from the recipe, run the Trainer."""

from __future__ import annotations

import logging

import jax

from mmjax.difficulty import selection as selection_lib
from mmjax.jobs import build
from mmjax.rl.objective import GRPOObjective
from mmjax.train.trainer import Trainer

log = logging.getLogger(__name__)


def build_trainer(config, workdir: str, tok=None, model=None) -> Trainer:
    """Tokenizer, model, data, rewards and the GRPO Trainer for `config` (no step taken yet)."""
    tok = tok if tok is not None else build.tokenizer(config)
    mesh = build.mesh(config)
    model = build.place(model, mesh) if model is not None else build.model(config, tok, mesh)
    rows = build.selected_source(config.data)
    chosen = selection_lib.write_report(rows, workdir)  # workdir/selection.json, with a score file only
    if chosen is not None:
        log.info("GRPO data: %s (rows in %s)", chosen.describe(), selection_lib.REPORT)
    data, feedback = build.grpo_dataset(config, tok, model, rows)  # the rollouts steer the next draws
    eos, pad = build.eos_and_pad(tok)
    loop = build.train_config(config)
    adapters = build.lora(config, model)  # {} or LoRA's spec and new adapters
    objective = GRPOObjective(model.module, build.reward(config), tok.decode, grpo=build.grpo_config(config),
                              rollout=build.rollout_config(config, tok),
                              gradient_accumulation_steps=loop.gradient_accumulation_steps, eos_token_ids=eos,
                              pad_token_id=pad, mesh=mesh, bucket_lengths=config.data.bucket_lengths,
                              reference_dtype=build.frozen_dtype(config), feedback=feedback,
                              lora=adapters.get("lora"))
    return Trainer(model, data, objective, optimizer=build.optimizer_config(config), config=loop,
                   workdir=workdir, mesh=mesh, frozen_dtype=build.frozen_dtype(config), **adapters)


def run(config, workdir: str) -> dict:
    from mmjax.train import checkpoints
    build.write_resolved_config(config, workdir)
    tok = build.tokenizer(config)
    trainer = build_trainer(config, workdir, tok=tok)
    n_params = sum(x.size for x in jax.tree.leaves(trainer.model.params))
    log.info("GRPO: %.2f M params on %s, workdir %s", n_params / 1e6, jax.devices(), workdir)
    metrics = trainer.train()
    if jax.process_index() == 0:
        from mmjax.difficulty import online_plots
        log.info("GRPO: plots %s", online_plots.write(workdir))  # report/online.png, report/jigsaw.png
    # The model to evaluate or serve, as the demo leaves it; a resumed run replaces it whole.
    out = checkpoints.export_hf(workdir, trainer.model, savers=(tok, build.image_config(config)))
    log.info("GRPO: HF export in %s", out)
    if (adapters := build.export_adapters(trainer, config, workdir)) is not None:
        log.info("GRPO: the LoRA adapters alone, for peft, in %s", adapters)
    return metrics
