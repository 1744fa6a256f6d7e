"""A reward for GRPO tests of ragged completions: the tiny model never answers the colour task, so its
choice reward is 0 everywhere, which would zero the advantages and every gradient a test compares."""

from mmjax.rewards.combine import RewardOutput


def length_reward(texts, targets, task=None):
    """len(text) / 6 under the demo's reward name: it differs within every ragged group."""
    values = [len(text) / 6.0 for text in texts]
    return RewardOutput(total=values, per_function={"accuracy_choice": values})
