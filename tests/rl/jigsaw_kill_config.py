"""The GRPO run tests/rl/test_kill_resume.py SIGKILLs and resumes, as a `--config` file: the tiny
image-jigsaw recipe with LoRA, adaptive difficulty and the packed update, plus a length reward.

The tiny random model solves no puzzle, so the jigsaw rewards are 0 for every completion: the
advantages, the gradients and the adapters would never move, and a params comparison could not
fail. The length reward (weight 1, registered on import, as a config file may) differs within
each group, while the jigsaw rewards still drive the level (their solve rate is 0: it steps down).
"""

import importlib

from mmjax.rewards import registry

LENGTH_REWARD = "test_completion_length"


def completion_length(completions, targets=None, **_):
    """len(text) / 8: a reward that varies within every group of sampled completions."""
    return [len(text) / 8.0 for text in completions]


if LENGTH_REWARD not in registry.names():
    registry.register(LENGTH_REWARD)(completion_length)


def get_config(arg: str | None = None):
    c = importlib.import_module("configs.jigsaw_image").get_config(arg or "tiny,lora,steps=6")
    c.save_steps = 1
    c.data.image_size = (112, 112)  # 28 px a tile up to 4x4
    a = c.data.adaptive
    a.enabled, a.min_groups, a.target_lo, a.target_hi = True, 1, 0.5, 0.9  # 3x3 -> 2x3 -> 2x2
    c.grpo.update_layout = "packed"
    c.rewards.weights[LENGTH_REWARD] = 1.0
    return c
