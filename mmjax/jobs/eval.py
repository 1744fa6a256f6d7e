"""The evaluation job (`config.mode = "eval"`): a model's answers to local benchmark files.

1. read and check every benchmark file of `config.eval.benchmarks` (formats:
   `mmjax.eval.benchmarks`), before any model is loaded: a missing file or a malformed row
   stops the job with the file and line (rows are never skipped: that would change a score);
2. load the model (`mmjax.jobs.build.model`): `config.init_from` if set (a training workdir,
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
from mmjax.jobs import build

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


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
    build.write_resolved_config(config, workdir)
    items = build.eval_read_all(config)  # every file checked before the (slow) model load
    opts, scoring = build.eval_read_options(config), build.eval_score_options(config)
    run_cfg = build.eval_runner_config(config)
    tok = build.tokenizer(config)
    model = build.eval_model(config, tok)
    runner = runner_lib.Runner(model, tok, build.image_config(config), run_cfg, build.allowed_token_ids(config, tok))
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    header = {"model": config.get("init_from") or config.model.hf_dir or f"random preset {config.model.preset!r}",
              "temperature": run_cfg.temperature, "max_new_tokens": run_cfg.max_new_tokens,
              "container": opts.container, **({"limit": opts.limit} if opts.limit else {}),
              **({"allowed_tokens": list(config.sample.allowed_tokens)} if config.sample.allowed_tokens else {})}
    files = build.eval_benchmark_files(config)
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
