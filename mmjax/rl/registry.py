"""Registry of the GRPO building blocks by kind and name (Tunix `function_registry` style).

Kinds:
    "advantage"  rewards [B*G], num_generations -> advantages [B*G]   (scale_rewards)
    "kl"         logp [B, T], ref_logp [B, T] -> per-token KL estimate (kl_estimator)
    "loss_agg"   per-token loss, masks, ... -> (numerator, denominator) (loss_type)

    fn = registry.get("advantage", "group")
    registry.names("loss_agg") -> ("bnpo", "dapo", "dr_grpo", "grpo")

Importing `mmjax.rl.advantages` and `mmjax.rl.losses` registers mmjax's functions; a user
may register more under a new name (GRPOConfig validates against the registered names).
"""

from __future__ import annotations

from collections.abc import Callable

KINDS = ("advantage", "kl", "loss_agg")

_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}


def _kind(kind: str) -> dict[str, Callable]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; kinds are {KINDS}")
    return _REGISTRY[kind]


def register(kind: str, name: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn`` as ``kind``/``name``; a second, different fn is an error."""
    table = _kind(kind)

    def decorator(fn: Callable) -> Callable:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered ({table[name].__qualname__})")
        table[name] = fn
        return fn

    return decorator


def get(kind: str, name: str) -> Callable:
    """The function registered as ``kind``/``name``; the error lists the allowed names."""
    table = _kind(kind)
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; registered: {names(kind)}")
    return table[name]


def names(kind: str) -> tuple[str, ...]:
    """Registered names of ``kind``, sorted."""
    return tuple(sorted(_kind(kind)))
