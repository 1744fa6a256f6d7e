"""Reinforcement learning on top of the models: GRPO losses, advantages and the learner (issue 9)."""
