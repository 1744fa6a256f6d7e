"""Scoring benchmark answers with mmjax's reward checkers, and the per-benchmark summaries.

Each item's `scorer` picks the checker, the same code the training rewards run:

  choice  option letter (`mmjax.rewards.choice`): MathVista multi-choice, MMStar, MMVP, DA-2K, MMMU
          multiple-choice, qa choice rows
  math    math-verify with the exact-string fallback (`accuracy_math`) against any accepted answer:
          MathVista free form, MMMU open questions, qa math rows
  ocr     normalised exact / substring / fuzzy match (`mmjax.rewards.ocr`, SPEC 2.3) against
          any accepted answer: OCRBench, qa ocr rows. (OCRBench's own rule is only "an accepted answer is
          a substring of the prediction"; mmjax keeps SPEC 2.3's rule, `ocr_min_ratio` and
          `ocr_allow_substring` tune it.)
  jigsaw  exact permutation (`mmjax.rewards.jigsaw`, SPEC 1.5): the solve rate, with the
          SPEC 1.5 reward's mean beside it
  yesno   the answer's first word, lower-cased and stripped of punctuation, is "yes" or "no"
          and equals the gold: HallusionBench

The answer is read from the container (`<answer>` or `\\boxed{}`), or the whole completion
when there is none, as the rewards do. Summaries: the headline metric (accuracy; MMVP pair
accuracy, a pair right only if both its questions are; jigsaw solve rate; HallusionBench
question accuracy, beside its figure and question-pair accuracies, a figure or pair right only
if all its questions are), its count, and the same metric per value of every group the rows
carry (category, skill, ...; HallusionBench: question accuracy).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Sequence
from typing import Any

from mmjax import containers, rewards
from mmjax.config_help import help_text
from mmjax.eval.benchmarks import Item
from mmjax.rewards import parsing, registry
from mmjax.rewards.choice import choice_score, parse_choice
from mmjax.rewards.jigsaw import jigsaw_score
from mmjax.rewards.ocr import ocr_score

HEADLINE = {"mathvista": "accuracy", "ocrbench": "accuracy", "mmstar": "accuracy", "mmvp": "pair_accuracy",
            "da2k": "accuracy", "jigsaw": "solve_rate", "qa": "accuracy", "mmmu": "accuracy",
            "hallusionbench": "question_accuracy"}


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """Checker settings; defaults as the training rewards, except math-verify's time.

    math_timeout_seconds: one row's whole math-verify check. 2 s, not the reward's 0.5 s:
      an evaluation has time, and a check cut short counts as wrong.
    jigsaw_think: a solve needs the SPEC 1.4 format (<think> then the container), as
      `jigsaw_exact` logs it in training; False reads the bare completion.
    """

    container: str = dataclasses.field(default=parsing.ANSWER, metadata=help_text(
        "answer container the checkers read; SPEC 1.4", choices=tuple(containers.CONTAINERS)))
    math_timeout_seconds: float = dataclasses.field(default=2.0, metadata=help_text(
        "one row's whole math-verify check (the training reward's is 0.5 s); mmjax.rewards.math_check.MathBudget"))
    math_workers: int = dataclasses.field(default=2, metadata=help_text("math-verify worker processes"))
    ocr_min_ratio: float = dataclasses.field(default=0.5, metadata=help_text(
        "OCR fuzzy-match threshold; SPEC 2.3 (mmjax.rewards.ocr)"))
    ocr_allow_substring: bool = dataclasses.field(default=True, metadata=help_text(
        "OCR: a substring either way counts; SPEC 2.3 / released reward"))
    jigsaw_think: bool = dataclasses.field(default=True, metadata=help_text(
        "a jigsaw solve needs the SPEC 1.4 format, as training's jigsaw_exact; False reads the bare completion"))


@dataclasses.dataclass(frozen=True)
class RowScore:
    correct: float  # 1.0 right (solved), 0.0 wrong
    extracted: str | None  # what the checker read as the answer
    reward: float | None = None  # jigsaw: the SPEC 1.5 reward


def score_items(items: Sequence[Item], texts: Sequence[str], opts: ScoreOptions = ScoreOptions()
                ) -> tuple[list[RowScore], dict[str, float]]:
    """Each answer's score, and the checkers' counters (e.g. math-verify timeouts)."""
    if len(items) != len(texts):
        raise ValueError(f"{len(items)} items but {len(texts)} answers")
    scores: list[RowScore | None] = [None] * len(items)
    math_rows = [i for i, item in enumerate(items) if item.scorer == "math"]
    with registry.collecting_metrics() as counters:
        if math_rows:
            check = rewards.get("accuracy_math", container=opts.container, timeout_seconds=opts.math_timeout_seconds,
                                workers=opts.math_workers)
            # One check per accepted answer (MMMU's lists of them); a row is right if any is.
            checks = [(i, gold) for i in math_rows for gold in (items[i].accepted or (items[i].gold,))]
            verdicts = check([texts[i] for i, _ in checks], [gold for _, gold in checks])
            best: dict[int, float] = {}
            for (i, _), verdict in zip(checks, verdicts):
                best[i] = max(best.get(i, 0.0), float(verdict))
            for i in math_rows:
                scores[i] = RowScore(best[i], parsing.answer_or_text(texts[i], opts.container))
    for i, (item, text) in enumerate(zip(items, texts)):
        if item.scorer != "math":
            scores[i] = _score_one(item, text, opts)
    return scores, dict(counters)


def _score_one(item: Item, text: str, opts: ScoreOptions) -> RowScore:
    answer = parsing.answer_or_text(text, opts.container)
    if item.scorer == "choice":
        return RowScore(choice_score(text, item.gold, container=opts.container), parse_choice(answer))
    if item.scorer == "ocr":
        right = max(ocr_score(text, gold, container=opts.container, min_ratio=opts.ocr_min_ratio,
                              allow_substring=opts.ocr_allow_substring) for gold in item.accepted)
        return RowScore(right, answer)
    if item.scorer == "jigsaw":
        score = jigsaw_score(text, item.gold, container=opts.container, think=opts.jigsaw_think)
        extracted = parsing.extract_answer(text, opts.container) if opts.jigsaw_think else text.strip()
        return RowScore(float(score.exact), extracted, score.total)
    if item.scorer == "yesno":
        said = parse_yes_no(answer)
        return RowScore(float(said == item.gold), said)
    raise ValueError(f"{item.where}: unknown scorer {item.scorer!r}")


def parse_yes_no(answer: str) -> str | None:
    """"yes" or "no" when the answer's first word, lower-cased and stripped of punctuation, is one; else None."""
    words = answer.split()
    word = words[0].lower().strip(string.punctuation) if words else ""
    return word if word in ("yes", "no") else None


# ---- summaries ---------------------------------------------------------------------------------

def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _by_group(units: Sequence[tuple[dict[str, tuple[str, ...]], float]]) -> dict[str, dict[str, dict[str, Any]]]:
    """kind -> value -> {score, n}: the mean over the units (rows or pairs) carrying that value."""
    found: dict[str, dict[str, list[float]]] = {}
    for groups, value in units:
        for kind, names in groups.items():
            for name in dict.fromkeys(names):  # a value listed twice counts once
                found.setdefault(kind, {}).setdefault(name, []).append(value)
    return {kind: {name: {"score": _mean(vals), "n": len(vals)} for name, vals in sorted(values.items())}
            for kind, values in found.items()}


def summarise(items: Sequence[Item], scores: Sequence[RowScore], counters: dict[str, float] | None = None
              ) -> dict[str, Any]:
    """The benchmark's metrics: headline `metric` and `score`, `n` rows, `metrics`, `by` group."""
    fmt = items[0].format
    correct = [s.correct for s in scores]
    metrics: dict[str, float] = {"accuracy": _mean(correct), "correct": float(sum(correct))}
    units = [(dict(item.groups), s.correct) for item, s in zip(items, scores)]
    if fmt == "mmvp":
        units = _all_right(items, correct, lambda item: item.pair)
        metrics = {"pair_accuracy": _mean([v for _, v in units]), "question_accuracy": metrics["accuracy"],
                   "pairs": float(len(units)), "correct_pairs": float(sum(v for _, v in units))}
    elif fmt == "jigsaw":
        metrics = {"solve_rate": metrics["accuracy"], "solved": metrics["correct"],
                   "mean_reward": _mean([s.reward for s in scores])}
    elif fmt == "hallusionbench":  # aAcc, fAcc and qAcc of the released evaluation
        figures = [v for _, v in _all_right(items, correct, lambda item: item.figure)]
        pairs = [v for _, v in _all_right(items, correct, lambda item: item.pair)]
        metrics = {"question_accuracy": metrics["accuracy"], "correct": metrics["correct"],
                   "figure_accuracy": _mean(figures), "figures": float(len(figures)),
                   "correct_figures": float(sum(figures)), "pair_accuracy": _mean(pairs),
                   "pairs": float(len(pairs)), "correct_pairs": float(sum(pairs))}
    for name, value in (counters or {}).items():
        metrics[name] = float(value)
    metric = HEADLINE[fmt]
    return {"format": fmt, "metric": metric, "score": metrics[metric], "n": len(items), "metrics": metrics,
            "by": _by_group(units)}


def _all_right(items: Sequence[Item], correct: Sequence[float], key: Callable[[Item], str | None]
               ) -> list[tuple[dict[str, tuple[str, ...]], float]]:
    """One unit per set of items with the same `key` (an MMVP pair, a HallusionBench figure or question
    pair), in first-appearance order: 1.0 only if all its questions are right. Items keyed None are in none."""
    pairs: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if key(item) is not None:
            pairs.setdefault(key(item), []).append(i)
    units = []
    for members in pairs.values():
        groups: dict[str, tuple[str, ...]] = {}
        for i in members:
            for kind, names in items[i].groups.items():
                groups[kind] = groups.get(kind, ()) + names
        units.append((groups, float(all(correct[i] == 1.0 for i in members))))
    return units
