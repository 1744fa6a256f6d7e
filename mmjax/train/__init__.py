"""Training utilities: Orbax checkpoints (checkpoints.py), and later the SFT loop, metrics and sharding rules."""
