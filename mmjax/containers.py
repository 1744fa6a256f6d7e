"""Answer containers: how a completion marks its final answer (SPEC 1.4).

Two containers exist, named by string everywhere in mmjax (configs, prompts, rewards):
``"answer"`` = ``<answer>...</answer>`` (paper, default) and ``"boxed"`` = ``\\boxed{...}``
(released Visual Jigsaw code). Prompts (mmjax.data) take their instruction from
``CONTAINERS`` and checkers (mmjax.rewards) parse the same container, so the two always
agree. This module sits below both, so neither imports the other.
"""

from __future__ import annotations

from typing import Final

ANSWER: Final = "answer"
BOXED: Final = "boxed"

# Instruction text a prompt appends so the model answers in the container the checker
# reads. Keep the wording about the container itself in sync with extract_answer.
CONTAINERS: Final[dict[str, str]] = {
    ANSWER: (
        "First think about the reasoning process inside <think> </think> tags, then put "
        "the final answer within <answer> </answer> tags."
    ),
    BOXED: (
        "First think about the reasoning process inside <think> </think> tags, then put "
        "the final answer within \\boxed{}."
    ),
}

def check_container(container: str) -> str:
    """Returns ``container`` if it is a known container name, else raises ValueError."""
    if container not in CONTAINERS:
        raise ValueError(f"unknown answer container {container!r}; expected one of {sorted(CONTAINERS)}")
    return container


def wrap_answer(answer: str, container: str = ANSWER) -> str:
    """The answer as a model should write it, e.g. ``<answer>3,1,2</answer>``."""
    if check_container(container) == ANSWER:
        return f"<answer>{answer}</answer>"
    return f"\\boxed{{{answer}}}"
