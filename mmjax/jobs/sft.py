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

from mmjax.data import batching, pipeline
from mmjax.data import sft as sft_data
from mmjax.difficulty import selection as selection_lib
from mmjax.jobs import setup
from mmjax.processing import special_token_ids
from mmjax.train.optim import OptimizerConfig
from mmjax.train.sft import SFTObjective
from mmjax.train.trainer import Trainer

log = logging.getLogger(__name__)


def dataset(config, tok, holder, source=None):
    """The grain dataset of SFT batches (prompt batch + targets / target_mask) for this recipe."""
    data, sft = config.data, config.sft
    ids = special_token_ids(tok)
    spec = holder.config.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    prompts = batching.Batcher(pad_id=ids.pad_token_id, spec=spec, bucket_lengths=tuple(data.bucket_lengths) or None)
    batcher = sft_data.SftBatcher(prompts, pad_id=ids.pad_token_id, bucket_lengths=tuple(sft.bucket_lengths) or None)
    try:
        answers = sft_data.AnswerTokens(tok, eos_token_id=ids.eos_token_ids[0], answer_format=sft.answer_format,
                                        max_answer_length=sft.max_answer_length or None, strict=data.strict)
    except ValueError as e:
        raise setup.ConfigFieldError(f"config.sft: {e}") from None
    pipe = pipeline.PipelineConfig(seed=data.seed, batch_size=data.batch_size, worker_count=data.worker_count,
                                   num_epochs=sft.num_epochs or None, strict=data.strict)
    source = source if source is not None else setup.selected_source(data)
    return pipeline.build_dataset(source, setup.transforms(data, tok, holder) + [answers], pipe, batch_fn=batcher)


def num_steps(config, num_rows: int) -> int:
    """Optimizer steps of the run: num_epochs passes over num_rows (batches run across epoch
    boundaries, as the pipeline makes them), cut at max_steps when that is > 0."""
    epochs, limit = config.sft.num_epochs, config.max_steps
    if epochs <= 0 and limit <= 0:
        raise setup.ConfigFieldError("config.sft.num_epochs and config.max_steps are both <= 0: the run has no end")
    if epochs <= 0:
        return limit
    per_process = num_rows // jax.process_count()
    steps = epochs * per_process // config.data.batch_size // config.gradient_accumulation_steps
    if steps < 1:
        raise setup.ConfigFieldError(
            f"config.data ({num_rows} rows, {jax.process_count()} processes) fills no step of "
            f"data.batch_size={config.data.batch_size} x gradient_accumulation_steps="
            f"{config.gradient_accumulation_steps} in sft.num_epochs={epochs}")
    return min(steps, limit) if limit > 0 else steps


def optimizer_config(config, steps: int) -> OptimizerConfig:
    node = dict(config.optim)
    node.setdefault("total_steps", steps)  # the schedule spans the run
    return setup.dataclass_from(OptimizerConfig, node, "optim")


def build_trainer(config, workdir: str, tok=None, holder=None, source=None) -> Trainer:
    """Tokenizer, model, data and the SFT Trainer for `config` (no step taken yet)."""
    tok = tok if tok is not None else setup.tokenizer(config)
    holder = holder if holder is not None else setup.model(config, tok)
    source = source if source is not None else setup.selected_source(config.data)  # SPEC 2.4 SFT(X)
    chosen = selection_lib.write_report(source, workdir)  # workdir/selection.json, with a score file only
    if chosen is not None:
        log.info("SFT data: %s (rows in %s)", chosen.describe(), selection_lib.REPORT)
    steps = num_steps(config, len(source))
    data = dataset(config, tok, holder, source)
    objective = SFTObjective(holder.module, pad_token_id=special_token_ids(tok).pad_token_id, mesh=holder.mesh,
                             skips=pipeline.skip_counter(data))
    return Trainer(holder, data, objective, optimizer=optimizer_config(config, steps),
                   config=setup.train_config(config, max_steps=steps), workdir=workdir, mesh=holder.mesh)


def run(config, workdir: str) -> dict:
    from mmjax.train import checkpoints
    setup.write_resolved_config(config, workdir)
    tok = setup.tokenizer(config)
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
    out = checkpoints.export_hf(workdir, trainer.model, savers=(tok, setup.image_config(config)))
    log.info("SFT: HF export in %s", out)
    return metrics
