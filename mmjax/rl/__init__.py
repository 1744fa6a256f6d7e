"""Reinforcement learning: the rollout sampler (sampler.py) and its pieces."""
