"""The evaluation job (`config.mode = "eval"`): a model's answers to local benchmark files.

1. read and check every benchmark file of `config.eval.benchmarks` (formats:
   `mmjax.eval.benchmarks`), before any model is loaded: a missing file or a malformed row
   stops the job with the file and line (rows are never skipped: that would change a score);
2. load the model (`mmjax.jobs.setup.model`): `config.init_from` if set (a training workdir,
   a checkpoint or an HF folder), else `model.hf_dir`, else a random `model.preset`;
3. per benchmark, answer every question (`mmjax.eval.runner`: greedy unless
   `eval.temperature` > 0) and score the answers (`mmjax.eval.metrics`);
4. write workdir/eval/<benchmark>.jsonl (every answer, in file order) and
   workdir/eval/results.json / results.md (after each benchmark, so a long run keeps what
   it finished).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mmjax.eval import benchmarks as bench_lib
from mmjax.eval import metrics as metrics_lib
from mmjax.eval import runner as runner_lib
from mmjax.jobs import setup

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


# ---- config -> pieces ----------------------------------------------------------------------

def benchmark_files(config) -> dict[str, str]:
    """Benchmark name -> file, for every name given a path (an empty path = not run)."""
    named = {name: str(path) for name, path in config.eval.benchmarks.items() if path}
    if not named:
        raise setup.ConfigFieldError(
            f"config.eval.benchmarks: no benchmark file given; set one of {sorted(config.eval.benchmarks)}, e.g. "
            "--config.eval.benchmarks.mmstar=/data/mmstar.jsonl")
    for name in named:
        try:
            bench_lib.format_of(name)
        except bench_lib.BenchmarkError as e:
            raise setup.ConfigFieldError(f"config.eval.benchmarks.{name}: {e}") from None
    return named


def read_options(config) -> bench_lib.ReadOptions:
    e = config.eval
    return bench_lib.ReadOptions(data_root=e.data_root or None, jigsaw_rows=e.jigsaw_rows, jigsaw_cols=e.jigsaw_cols,
                                 seed=e.seed, container=e.container, limit=e.limit)


def score_options(config) -> metrics_lib.ScoreOptions:
    e = config.eval
    return metrics_lib.ScoreOptions(container=e.container, math_timeout_seconds=e.math_timeout_seconds,
                                    math_workers=e.math_workers, ocr_min_ratio=e.ocr_min_ratio,
                                    ocr_allow_substring=e.ocr_allow_substring, jigsaw_think=e.jigsaw_think)


def runner_config(config) -> runner_lib.RunnerConfig:
    e, d = config.eval, config.data
    try:
        return runner_lib.RunnerConfig(batch_size=e.batch_size, max_new_tokens=e.max_new_tokens,
                                       temperature=e.temperature, top_p=e.top_p, seed=e.seed,
                                       min_vision_rows=d.min_vision_rows,
                                       bucket_lengths=tuple(d.bucket_lengths) or None, progress=e.progress)
    except ValueError as err:
        raise setup.ConfigFieldError(f"config.eval: {err}") from None


def read_all(config) -> dict[str, list[bench_lib.Item]]:
    """Every benchmark's checked items; the first bad file or row raises ConfigFieldError naming it."""
    opts, out = read_options(config), {}
    for name, path in benchmark_files(config).items():
        try:
            out[name] = bench_lib.read_benchmark(name, path, opts)
        except bench_lib.BenchmarkError as e:
            raise setup.ConfigFieldError(f"config.eval.benchmarks.{name}: {e}") from None
    return out


def load_model(config, tok):
    """The model to evaluate: config.init_from's weights if set, else model.hf_dir / the preset."""
    return setup.model(config, tok)  # init_from: a training workdir, a checkpoint or an HF folder


# ---- outputs ---------------------------------------------------------------------------------

def answer_rows(items, generations, scores) -> list[dict[str, Any]]:
    """The answers file's rows, in file order."""
    rows = []
    for item, gen, score in zip(items, generations, scores):
        row = {"index": item.index, "id": item.id, "where": item.where, "question": item.prompt,
               "gold": item.gold, **({"accepted": list(item.accepted)} if len(item.accepted) > 1 else {}),
               "answer": gen.text, "extracted": score.extracted, "correct": score.correct,
               "num_tokens": gen.num_tokens, "stopped": gen.stopped,
               "groups": {k: list(v) for k, v in item.groups.items()}, **dict(item.record)}
        if score.reward is not None:
            row["reward"] = score.reward
        rows.append(row)
    return rows


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def results_table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown table of results.md: one row per benchmark, scores in percent."""
    lines = ["| benchmark | format | metric | score (%) | n |", "|---|---|---|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['format']} | {r['metric']} | {100 * r['score']:.2f} | {r['n']} |")
    return "\n".join(lines)


def results_markdown(results: dict[str, dict[str, Any]], header: dict[str, Any]) -> str:
    lines = ["# Evaluation", "", *(f"- {k}: {v}" for k, v in header.items()), "", results_table(results), ""]
    for name, r in results.items():  # the per-group breakdowns, below the one summary table
        for kind, values in r["by"].items():
            lines += [f"## {name}: {r['metric']} by {kind}", "", f"| {kind} | score (%) | n |", "|---|---:|---:|"]
            lines += [f"| {value} | {100 * v['score']:.2f} | {v['n']} |" for value, v in values.items()]
            lines.append("")
    return "\n".join(lines)


def write_results(out_dir: str, results: dict[str, dict[str, Any]], header: dict[str, Any]) -> None:
    for name, text in ((RESULTS_JSON, json.dumps({**header, "benchmarks": results}, indent=2)),
                       (RESULTS_MD, results_markdown(results, header))):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, name))


# ---- the job ---------------------------------------------------------------------------------

def run(config, workdir: str) -> dict[str, dict[str, Any]]:
    setup.write_resolved_config(config, workdir)
    items = read_all(config)  # every file checked before the (slow) model load
    opts, scoring, run_cfg = read_options(config), score_options(config), runner_config(config)
    tok = setup.tokenizer(config)
    holder = load_model(config, tok)
    runner = runner_lib.Runner(holder, tok, setup.image_config(config), run_cfg)
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    header = {"model": config.get("init_from") or config.model.hf_dir or f"random preset {config.model.preset!r}",
              "temperature": run_cfg.temperature, "max_new_tokens": run_cfg.max_new_tokens,
              "container": opts.container, **({"limit": opts.limit} if opts.limit else {})}
    files = benchmark_files(config)
    results: dict[str, dict[str, Any]] = {}
    for name, bench_items in items.items():
        t0 = time.perf_counter()
        render = lambda item, images: bench_lib.render(item, images, opts, config.eval.system_prompt)  # noqa: E731
        generations = runner.run(bench_items, render, desc=name)
        scores, counters = metrics_lib.score_items(bench_items, [g.text for g in generations], scoring)
        _write_jsonl(os.path.join(out_dir, f"{name}.jsonl"), answer_rows(bench_items, generations, scores))
        summary = metrics_lib.summarise(bench_items, scores, counters)
        summary["file"] = files[name]
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        summary["truncated"] = sum(not g.stopped for g in generations)  # answers cut at max_new_tokens
        results[name] = summary
        write_results(out_dir, results, header)
        print(f"{name}: {summary['metric']} {100 * summary['score']:.2f}% over {summary['n']} questions "
              f"({summary['seconds']:.0f} s)")
    print(results_table(results))
    return results
