"""Rewards on decoded text, registered by name; all batched and total.

    fn = rewards.get("jigsaw", **rewards.JIGSAW_PRESETS["code"])
    fn(completions, targets) -> list[float]
    rewards.combine({"format": 1.0, "accuracy_math": 1.0})(completions, targets)
        -> RewardOutput(total, per_function)

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
from mmjax.rewards.jigsaw import JIGSAW_PRESETS, JigsawScore, jigsaw_score
from mmjax.rewards.parsing import ANSWER, BOXED, CONTAINERS, extract_answer, think_format_ok, wrap_answer
from mmjax.rewards.registry import BadTarget, RewardFn, get, names, options, register

__all__ = [
    "ANSWER",
    "BOXED",
    "CONTAINERS",
    "JIGSAW_PRESETS",
    "BadTarget",
    "CombinedReward",
    "JigsawScore",
    "RewardFn",
    "RewardOutput",
    "combine",
    "extract_answer",
    "get",
    "jigsaw_score",
    "names",
    "options",
    "register",
    "think_format_ok",
    "wrap_answer",
]
