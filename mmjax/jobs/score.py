"""The difficulty scoring job (`config.mode = "score"`): PISM and / or CMAB over a dataset (SPEC 2.1, 2.2).

    python -m mmjax.main --config configs/difficulty_score.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/train.jsonl

Reads every row of config.data (in order, one pass), scores batches of config.data.batch_size
samples with `mmjax.difficulty.scoring.Scorer` and writes, in the workdir:

  scores.parts/       one parquet part per scored batch (`mmjax.difficulty.score_file`)
  scores.parquet      every record, merged when the job ends (scores.jsonl too with
                      score.write_jsonl)
  score_summary.json  record and level counts, skipped rows by reason with their file:line,
                      samples per second, unreadable parts moved aside ("corrupt_parts")
  pism_survival.png, levels.png, cmab_scores.png   (`mmjax.difficulty.plots`)

Resuming: a rerun in the same workdir skips the ids already in scores.parts and scores
the rest, so a crash loses at most the batch in flight; the batches after it are the same
as the first run's, and so are their records (`scoring` module doc: determinism). A part
that does not read (truncated) is renamed <part>.corrupt, kept, and its rows scored again.

Bad rows (a corrupt or missing image, no solution, a prompt over max_prompt_length, a
reward that raises) are skipped, counted and named with their file:line, or raise naming
it with config.data.strict. One process only (the parts of several would collide).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np

from mmjax.data import batching, pipeline
from mmjax.data.skips import SkipCounter, Skipped, skip_or_raise
from mmjax.difficulty import cmab as cmab_lib
from mmjax.difficulty import plots, score_file, scoring
from mmjax.jobs import build
from mmjax.processing import special_token_ids
from mmjax.train import preemption

log = logging.getLogger(__name__)

SUMMARY = "score_summary.json"
KEEP_SKIPPED = 1000  # skipped rows named in the summary (all are counted)


class NamingSkipCounter(SkipCounter):
    """A SkipCounter that also keeps the first `keep` skipped rows ("reason at file:line: detail")."""

    def __init__(self, keep: int = KEEP_SKIPPED):
        super().__init__()
        self.keep = keep
        self.rows: list[str] = []

    def record(self, skipped: Skipped) -> None:
        super().record(skipped)
        if len(self.rows) < self.keep:
            self.rows.append(str(skipped))


def _batches(samples: Iterable[dict], done: set[str], size: int, strict: bool, read_skips: SkipCounter,
             skips: SkipCounter, progress) -> Iterator[list[dict]]:
    """Batches of `size` samples not scored yet, in source order (ids in `done` are passed over).

    read_skips: the pipeline's counter (rows dropped before they reach here, for the bar);
    skips: where a repeated id is counted.
    """
    batch, seen, yielded, shown = [], set(done), 0, 0
    for sample in samples:
        yielded += 1
        progress.update(yielded + read_skips.total - shown)
        shown = yielded + read_skips.total
        sid = str(sample.get("id", sample.get("index")))
        if sid in done:
            continue
        if sid in seen:
            skips.record(skip_or_raise(strict, "duplicate_id", str(sample.get("where", sid)),
                                       f"id {sid!r} is already scored: ids must be unique"))
            continue
        seen.add(sid)
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def relevel_quantile(records: list[dict], config: cmab_lib.CmabConfig) -> list[dict]:
    """CMAB levels of the quantile mode, over every record at once (per-batch quantiles would be wrong)."""
    scored = [r for r in records if r["cmab_level"]]
    if config.mode != "quantile" or not scored:
        return records
    values = np.asarray([r[f"cmab_{config.definition}"] for r in scored], np.float64)
    correct = np.asarray([bool(r["correct"]) for r in scored])
    for r, level in zip(scored, cmab_lib.quantile_levels(values, correct, config)):
        r["cmab_level"] = str(level)
    return records


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="row", dynamic_ncols=True, disable=not enabled, desc="scoring")


def run(config, workdir: str, *, tok=None, model=None,
        on_batch: Callable[[int, list[dict]], None] | None = None) -> dict:
    """Score config.data into workdir; returns the summary (also in workdir/score_summary.json).

    tok / model: a tokenizer and model already built (tests); on_batch(index, records) is
    called after each batch's part is written.
    """
    t0 = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    score_cfg, levels_cfg, cmab_cfg, job = build.score_configs(config)
    if jax.process_count() > 1:
        raise build.ConfigFieldError("mode=score runs on one process (its score file parts would collide); "
                                     f"this job has {jax.process_count()}")
    build.write_resolved_config(config, workdir)
    data = config.data
    tok = tok if tok is not None else build.tokenizer(config)
    mesh = build.mesh(config)
    model = build.place(model, mesh) if model is not None else build.model(config, tok, mesh)
    source = build.source(data)  # every row: scoring rates the whole set, selection comes after
    task, process = build.transforms(data, tok, model)
    process = dataclasses.replace(process, strict=bool(data.strict))
    spec = model.config.input_spec(min_vision_rows=data.min_vision_rows, max_pixels=data.max_pixels)
    batcher = batching.Batcher(pad_id=special_token_ids(tok).pad_token_id, spec=spec,
                               bucket_lengths=tuple(data.bucket_lengths) or None)
    eos, pad = build.eos_and_pad(tok)
    read_skips, skips = NamingSkipCounter(), NamingSkipCounter()  # rows the pipeline drops; the scorer's
    try:
        scorer = scoring.Scorer(model, tok.decode, process, batcher, build.reward(config), score_cfg, levels_cfg,
                                cmab_cfg, eos_token_ids=eos, pad_token_id=pad,
                                allowed_token_ids=build.allowed_token_ids(config, tok), seed=config.seed,
                                strict=bool(data.strict), skips=skips)
    except ValueError as e:
        raise build.ConfigFieldError(f"config.score: {e}") from None
    # One pass in source order, unbatched (this job batches after dropping the ids already scored);
    # batch_size only sizes grain's read-ahead here (2 x batch_size rows, at least its 4 threads).
    pipe = pipeline.PipelineConfig(seed=data.seed, shuffle=False, num_epochs=1, batch_size=max(2, data.batch_size),
                                   drop_remainder=False, worker_count=data.worker_count, strict=bool(data.strict))
    samples = pipeline.build_dataset(source, [task], pipe, counter=read_skips)

    writer = score_file.ScoreWriter(workdir)
    done = writer.done_ids()
    scored, batches = 0, 0
    t_loop = time.perf_counter()
    with _progress(len(source), job.progress) as bar, preemption.StopOnSignal() as stop:
        bar.set_postfix(resumed=len(done))
        try:
            for batch in _batches(samples, done, data.batch_size, bool(data.strict), read_skips, skips, bar):
                records = scorer.score(batch)
                writer.write(records)
                scored += len(records)
                if on_batch is not None:
                    on_batch(batches, records)
                batches += 1
                if stop.reached(batches):  # a signal: the batch in flight is scored and its part written
                    raise preemption.Preempted(batches, what=f"the scores of {scored} rows, in {writer.parts_dir}")
                if job.max_batches and batches >= job.max_batches:
                    log.warning("score: stopping after score.max_batches=%d batches; rerun to resume",
                                job.max_batches)
                    break
        finally:
            scorer.close()
    loop_seconds = time.perf_counter() - t_loop

    quantile = "cmab" in score_cfg.methods and cmab_cfg.mode == "quantile"
    relevel = (lambda rs: relevel_quantile(rs, cmab_cfg)) if quantile else None
    path = writer.finish(jsonl=job.write_jsonl, update=relevel)
    counts = collections.Counter(read_skips.counts) + collections.Counter(skips.counts)
    skipped_rows = (read_skips.rows + skips.rows)[:KEEP_SKIPPED]
    records = score_file.read_scores(path)
    thresholds = ((cmab_cfg.easy_below, cmab_cfg.hard_from, cmab_cfg.hard_to, cmab_cfg.easy_above)
                  if cmab_cfg.mode == "fixed" else ())
    pictures = plots.write_all(records, workdir, thresholds, cmab_cfg.definition)
    summary = {
        "records": len(records),
        "scored_this_run": scored,
        "already_scored": len(done),
        "rows": len(source),
        "batches_this_run": batches,
        "sampler_calls": scorer.calls,
        "skipped": dict(sorted(counts.items())),
        "skipped_total": sum(counts.values()),
        "skipped_rows": skipped_rows,
        "pism_levels": dict(collections.Counter(r["pism_level"] for r in records if r["pism_level"])),
        "cmab_levels": dict(collections.Counter(r["cmab_level"] for r in records if r["cmab_level"])),
        "samples_per_second": scored / loop_seconds if loop_seconds > 0 and scored else 0.0,
        "seconds": time.perf_counter() - t0,
        "files": {"scores": path, "plots": pictures},
        # {part, moved_to, rows (None: unknown), error}: ScoreWriter set them aside; their rows
        # were not done, so they are among scored_this_run
        "corrupt_parts": writer.corrupt_parts,
    }
    with open(os.path.join(workdir, SUMMARY), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"score: {len(records)} records in {path} ({scored} scored this run, {len(done)} before); "
          f"{summary['samples_per_second']:.2f} samples/s")
    print(f"score: skipped {summary['skipped_total']} rows {summary['skipped']}" + (
        f"; first: {skipped_rows[0]}" if skipped_rows else ""))
    print(f"score: PISM levels {summary['pism_levels']}; CMAB levels {summary['cmab_levels']}")
    for bad in writer.corrupt_parts:
        print(f"score: unreadable part {bad['part']} was moved to {bad['moved_to']} and its rows scored again")
    return summary
