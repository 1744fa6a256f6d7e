"""Evaluation on local benchmark files (`config.mode = "eval"`, `mmjax.jobs.eval`).

    benchmarks  one reader per format (MathVista, OCRBench, MMStar, MMVP, DA-2K, jigsaw):
                JSONL rows -> checked `Item`s; the file formats are in its docstring
    runner      items -> model answers (batched, bucketed shapes, greedy by default)
    metrics     answers -> scores with mmjax's reward checkers -> per-benchmark summaries
"""

from mmjax.eval.benchmarks import FORMATS, BenchmarkError, Item, ReadOptions, read_benchmark, render
from mmjax.eval.metrics import RowScore, ScoreOptions, score_items, summarise
from mmjax.eval.runner import Generation, Runner, RunnerConfig

__all__ = [
    "FORMATS",
    "BenchmarkError",
    "Generation",
    "Item",
    "ReadOptions",
    "RowScore",
    "Runner",
    "RunnerConfig",
    "ScoreOptions",
    "read_benchmark",
    "render",
    "score_items",
    "summarise",
]
