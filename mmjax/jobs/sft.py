"""The SFT job (`config.mode = "sft"`): build the pieces from the recipe, run the Trainer with the SFT objective.

The data is the GRPO pipeline's (source, task transform, `ProcessSample`, the prompt
`Batcher`) plus the answer tokens (`mmjax.data.sft`), repeated `config.sft.num_epochs`
times. The run is as long as those passes take (cut at `config.max_steps` when > 0), and
the learning-rate schedule spans exactly that many steps. GRPO then starts from the result
with `--config.init_from=<this workdir>`.
"""

from __future__ import annotations

import logging

import jax

from mmjax.data import pipeline
from mmjax.difficulty import selection as selection_lib
from mmjax.jobs import build
from mmjax.processing import special_token_ids
from mmjax.train.sft import SFTObjective
from mmjax.train.trainer import Trainer

log = logging.getLogger(__name__)


def build_trainer(config, workdir: str, tok=None, model=None, source=None) -> Trainer:
    """Tokenizer, model, data and the SFT Trainer for `config` (no step taken yet)."""
    tok = tok if tok is not None else build.tokenizer(config)
    mesh = build.mesh(config)
    model = build.place(model, mesh) if model is not None else build.model(config, tok, mesh)
    source = source if source is not None else build.selected_source(config.data)  # SPEC 2.4 SFT(X)
    chosen = selection_lib.write_report(source, workdir)  # workdir/selection.json, with a score file only
    if chosen is not None:
        log.info("SFT data: %s (rows in %s)", chosen.describe(), selection_lib.REPORT)
    steps = build.sft_steps(config, len(source))
    data = build.sft_dataset(config, tok, model, source)
    adapters = build.lora(config, model)  # {} or LoRA's spec and new adapters
    objective = SFTObjective(model.module, pad_token_id=special_token_ids(tok).pad_token_id, mesh=mesh,
                             skips=pipeline.skip_counter(data), lora=adapters.get("lora"))
    return Trainer(model, data, objective, optimizer=build.optimizer_config(config, total_steps=steps),
                   config=build.train_config(config, max_steps=steps), workdir=workdir, mesh=mesh,
                   frozen_dtype=build.frozen_dtype(config), **adapters)


def run(config, workdir: str) -> dict:
    from mmjax.train import checkpoints
    build.write_resolved_config(config, workdir)
    tok = build.tokenizer(config)
    trainer = build_trainer(config, workdir, tok=tok)
    n_params = sum(x.size for x in jax.tree.leaves(trainer.model.params))
    log.info("SFT: %.2f M params on %s, %d steps, workdir %s", n_params / 1e6, jax.devices(),
             trainer.cfg.max_steps, workdir)
    metrics = trainer.train()
    skips = trainer.objective.skips.counts if trainer.objective.skips is not None else {}
    if skips:  # the whole run's count, the end of the data's included
        log.warning("SFT: %d samples skipped in all (%s)", sum(skips.values()),
                    ", ".join(f"{reason} {n}" for reason, n in sorted(skips.items())))
    # The model to evaluate or serve, as the demo leaves it; a resumed run replaces it whole.
    out = checkpoints.export_hf(workdir, trainer.model, savers=(tok, build.image_config(config)))
    log.info("SFT: HF export in %s", out)
    if (adapters := build.export_adapters(trainer, config, workdir)) is not None:
        log.info("SFT: the LoRA adapters alone, for peft, in %s", adapters)
    return metrics
