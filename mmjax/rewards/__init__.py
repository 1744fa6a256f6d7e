"""Rewards on decoded text, registered by name; all batched and total.

    fn = rewards.get("jigsaw", **rewards.JIGSAW_PRESETS["code"])
    fn(completions, targets) -> list[float]
    rewards.combine({"format": 1.0, "accuracy_math": 1.0})(completions, targets)
        -> RewardOutput(total, per_function, metrics)

``metrics`` holds counts a reward records for the training loop to log, such as
``accuracy_math/math_timeouts`` (rows whose math-verify check ran past its per-row
budget, scored 0); a reward called directly leaves them for ``rewards.pop_metrics()``.

Registered: format, repetition, jigsaw, jigsaw_exact, accuracy_math, accuracy_choice,
accuracy_ocr, accuracy_count, accuracy_grounding, accuracy (per-row ``task`` column).
Answer containers ("answer", "boxed") and their prompt instructions: ``CONTAINERS``.
"""

# Importing a reward module registers its rewards.
from mmjax.rewards import (  # noqa: F401
    accuracy,
    choice,
    counting,
    format_reward,
    grounding,
    jigsaw,
    math_answer,
    ocr,
    repetition,
)
from mmjax.rewards.combine import CombinedReward, RewardOutput, combine
from mmjax.rewards.jigsaw import JIGSAW_PRESETS, JigsawOptions, JigsawScore, jigsaw_score
from mmjax.containers import ANSWER, BOXED, CONTAINERS, wrap_answer
from mmjax.rewards.parsing import extract_answer, think_format_ok
from mmjax.rewards.math_check import MathBudget
from mmjax.rewards.registry import BadTarget, RewardFn, get, names, options, pop_metrics, record_metric, register

__all__ = [
    "ANSWER",
    "BOXED",
    "CONTAINERS",
    "JIGSAW_PRESETS",
    "BadTarget",
    "CombinedReward",
    "JigsawOptions",
    "JigsawScore",
    "MathBudget",
    "RewardFn",
    "RewardOutput",
    "combine",
    "extract_answer",
    "get",
    "jigsaw_score",
    "names",
    "options",
    "pop_metrics",
    "record_metric",
    "register",
    "think_format_ok",
    "wrap_answer",
]
