"""GRPO as mmjax defines it (SPEC section 3): the config and the two calls the learner makes.

    cfg = GRPOConfig(**GRPO_PRESETS["jigsaw"])            # or GRPOConfig(num_generations=8, ...)
    adv = grpo.advantages(cfg, rewards)                   # [N*G], prompt-major, outside grad
    out = grpo.loss(cfg, logp, old_logp, adv, completion_mask, ref_logp=None)
    # per micro-batch: grad of out.loss.total; sum grads and `out` (mmjax.train.weighted.accumulate) over
    # micro-batches and devices, then divide grads by the summed out.loss.count, once.

Field names and defaults are TRL's `GRPOConfig` (trl/trainer/grpo_config.py, v1.x) unless
the help says otherwise; the recipes of the two papers are presets (SPEC 1.6, SPEC 2.4).
The pure functions live in `mmjax.rl.advantages` and `mmjax.rl.losses`; the names a field
accepts are those registered in `mmjax.rl.registry`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax

from mmjax.rl import advantages as advantages_lib
from mmjax.rl import losses, registry
from mmjax.config_help import choice_errors, help_text

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO knobs with TRL's names. Defaults: TRL GRPOConfig; presets: GRPO_PRESETS."""

    num_generations: int = dataclasses.field(default=8, metadata=help_text(
        "G, completions sampled per prompt; TRL default 8, SPEC 2.4 8, SPEC 1.6 16"))
    temperature: float = dataclasses.field(default=1.0, metadata=help_text(
        "sampling temperature, also dividing the logits when log-probs are recomputed; TRL 1.0, SPEC 1.6 / 2.4 1.0"))
    top_p: float = dataclasses.field(default=1.0, metadata=help_text(
        "nucleus sampling mass in (0, 1], 1 = off; TRL 1.0, SPEC 1.6 1.0"))
    top_k: int = dataclasses.field(default=0, metadata=help_text(
        "top-k sampling, 0 = off; TRL 0 (as mmjax.models.sampling.SamplingParams)"))
    max_completion_length: int = dataclasses.field(default=256, metadata=help_text(
        "most generated tokens per completion, and dr_grpo's normaliser; TRL 256, SPEC 1.6 2048, SPEC 2.4 1024"))
    beta: float = dataclasses.field(default=0.0, metadata=help_text(
        "KL coefficient, 0 = no reference model; TRL 0.0, SPEC 1.6 0 (no KL), SPEC 2.4 0.001"))
    kl_estimator: str = dataclasses.field(default="k3", metadata=help_text(
        "k1 | k2 | k3 (k3 = exp(ref - new) - (ref - new) - 1); TRL uses k3 only (no such knob), "
        "Tunix's default is k1 ('kl'); SPEC 3", choices=lambda: registry.names("kl")))
    epsilon: float = dataclasses.field(default=0.2, metadata=help_text(
        "lower clip: ratio >= 1 - epsilon; TRL 0.2, SPEC 1.6 0.2"))
    epsilon_high: float | None = dataclasses.field(default=None, metadata=help_text(
        "upper clip: ratio <= 1 + epsilon_high, None = epsilon; TRL default None, DAPO recommends 0.28"))
    delta: float | None = dataclasses.field(default=None, metadata=help_text(
        "dual-clip c: for A < 0 the loss is capped at -delta * A, None = off; Tunix epsilon_c, SPEC 1.6 c=3. "
        "TRL's delta (INTELLECT-2 two-sided clip) gives the same loss when delta > 1 + epsilon_high, "
        "which is required"))
    loss_type: str = dataclasses.field(default="dapo", metadata=help_text(
        "grpo | bnpo | dapo | dr_grpo (bnpo = dapo under mmjax's exact accumulation); TRL default dapo, "
        "SPEC 1.6 token-mean = dapo", choices=lambda: registry.names("loss_agg")))
    scale_rewards: str = dataclasses.field(default="group", metadata=help_text(
        "group | batch | none: divide the centred reward by the group std, the batch std, or not "
        "(TRL's True / False are 'group' / 'none'); TRL default group", choices=lambda: registry.names("advantage")))
    importance_sampling_level: str = dataclasses.field(default="token", metadata=help_text(
        "token (GRPO) | sequence (GSPO: the row's mean log-ratio); TRL default token",
        choices=losses.IMPORTANCE_SAMPLING_LEVELS))
    num_iterations: int = dataclasses.field(default=1, metadata=help_text(
        "mu, optimizer updates per rollout batch; 1 = the sampler's log-probs are old_logp; "
        "TRL 1, SPEC 1.6 1"))
    mask_truncated_completions: bool = dataclasses.field(default=False, metadata=help_text(
        "zero the tokens of completions that hit max_completion_length (DAPO); they still count as "
        "rows in the grpo / dr_grpo denominators, as in TRL; TRL default False"))
    update_layout: str = dataclasses.field(default="auto", metadata=help_text(
        "padded: every completion row at the full completion width | packed: each prompt's completions packed "
        "into fewer rows (mmjax.rl.packing; the same log-probs, fewer padded slots for ragged lengths) | auto: "
        "packed for a micro-batch whose packed rows are at most 3/4 of its completions "
        "(mmjax.rl.packing.AUTO_MAX_ROWS_SHARE), else padded: both programs may compile, and packed once per "
        "row-count bucket a step meets | bucketed: each prompt's completions sorted by length into the "
        "completion_chunks micro-batches, each at the power-of-two width of its longest (one program per "
        "width); default auto: tools/bench/update_ragged.py (ragged lengths, bench model, CPU) ran packed "
        "2.7x faster than padded and bucketed 1.3x; mmjax, issue 24",
        choices=("padded", "packed", "auto", "bucketed")))
    packed_rows: str = dataclasses.field(default="pooled", metadata=help_text(
        "how update_layout packed / auto lays out the packed rows: pooled: the micro-batch gets the rows its "
        "prompts need together (never more than per_prompt's), each row gathering its prompt's cache in each "
        "layer | per_prompt: every prompt gets the rows the neediest prompt needs, its cache read in place as a "
        "shared prefix; tools/bench/update_ragged.py measured pooled 2.0x padded where per_prompt gave 1.2x "
        "(ragged lengths, bench model, CPU); mmjax, issue 24", choices=("pooled", "per_prompt")))
    completion_chunks: int = dataclasses.field(default=1, metadata=help_text(
        "split each prompt's G completions into this many micro-batches for the log-prob passes and the "
        "update (mmjax; no TRL knob): 1/k of the update's completion rows per device, at the cost of running "
        "the prompt (and its images) k times; the loss is exact ((sum, count) accumulation), the rollout "
        "still samples all G in one call. Must divide num_generations"))

    def __post_init__(self):
        errors = []

        def check(ok: bool, field: str, why: str) -> None:
            if not ok:
                errors.append(f"{field}={getattr(self, field)!r}: {why}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_num(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        check(is_int(self.num_generations) and self.num_generations >= 2, "num_generations",
              "must be an int >= 2 (a group of one has no relative advantage; TRL requires 2)")
        check(is_num(self.temperature) and self.temperature > 0, "temperature", "must be > 0")
        check(is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(is_int(self.top_k) and self.top_k >= 0, "top_k", "must be an int >= 0 (0 = off)")
        check(is_int(self.max_completion_length) and self.max_completion_length >= 1,
              "max_completion_length", "must be an int >= 1")
        check(is_num(self.beta) and self.beta >= 0, "beta", "must be >= 0 (0 = no KL term)")
        check(is_num(self.epsilon) and 0 <= self.epsilon < 1, "epsilon", "must be in [0, 1)")
        check(self.epsilon_high is None or (is_num(self.epsilon_high) and self.epsilon_high >= 0),
              "epsilon_high", "must be None (= epsilon) or >= 0")
        if self.delta is not None and not errors:
            check(is_num(self.delta) and self.delta > 1 + self.clip_high, "delta",
                  f"the dual clip must be None or > 1 + epsilon_high = {1 + self.clip_high}")
        check(is_int(self.num_iterations) and self.num_iterations >= 1, "num_iterations", "must be an int >= 1")
        check(isinstance(self.mask_truncated_completions, bool), "mask_truncated_completions", "must be a bool")
        check(is_int(self.completion_chunks) and self.completion_chunks >= 1
              and is_int(self.num_generations) and self.num_generations % self.completion_chunks == 0,
              "completion_chunks", f"must be an int >= 1 dividing num_generations={self.num_generations}")
        errors.extend(choice_errors(self))  # kl_estimator, loss_type, scale_rewards, importance_sampling_level
        if errors:
            raise ValueError("GRPOConfig: " + "; ".join(errors))
        if self.importance_sampling_level == "sequence" and self.loss_type != "grpo":
            # TRL warns the same (grpo_trainer.py L903-909): a sequence-level ratio summed
            # over tokens weighs each sequence by its length.
            logger.warning("GRPOConfig: importance_sampling_level='sequence' with loss_type=%r weighs "
                           "each sequence by its length; GSPO uses loss_type='grpo'", self.loss_type)

    @property
    def clip_high(self) -> float:
        """The upper clip epsilon actually used: epsilon_high, or epsilon when None (TRL)."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high

    @property
    def completions_per_chunk(self) -> int:
        """Completions of a prompt in one update micro-batch (G / completion_chunks)."""
        return self.num_generations // self.completion_chunks

    def loss_options(self) -> dict[str, Any]:
        """The static keyword arguments of `losses.policy_loss` this config sets."""
        return dict(
            loss_type=self.loss_type,
            epsilon=self.epsilon,
            epsilon_high=self.clip_high,
            delta=self.delta,
            beta=self.beta,
            kl_estimator=self.kl_estimator,
            importance_sampling_level=self.importance_sampling_level,
            max_completion_length=self.max_completion_length,
        )


# The two papers' recipes (keyword arguments for GRPOConfig). Values not listed are TRL's.
GRPO_PRESETS: dict[str, dict[str, Any]] = {
    # SPEC 1.6, Visual Jigsaw: group 16, temperature 1.0, top_p 1, no KL, clip 0.2 with
    # dual clip c=3, token-mean loss, one update per rollout batch, responses up to 2048.
    "jigsaw": dict(num_generations=16, temperature=1.0, top_p=1.0, beta=0.0, epsilon=0.2, delta=3.0,
                   loss_type="dapo", num_iterations=1, max_completion_length=2048),
    # SPEC 2.4, difficulty-aware GRPO: group 8, temperature 1.0, beta 0.001, completions up
    # to 1024 (the loss aggregation is not stated there: TRL's default).
    "difficulty": dict(num_generations=8, temperature=1.0, beta=0.001, max_completion_length=1024),
}


def advantages(config: GRPOConfig, rewards: jax.Array) -> jax.Array:
    """Advantages [N*G] from prompt-major rewards [N*G] with the config's scale_rewards."""
    return advantages_lib.compute_advantages(rewards, config.num_generations, config.scale_rewards)


def loss(
    config: GRPOConfig,
    logp: jax.Array,
    old_logp: jax.Array | None,
    advantages: jax.Array,
    completion_mask: jax.Array,
    *,
    ref_logp: jax.Array | None = None,
    row_mask: jax.Array | None = None,
) -> losses.LossOutput:
    """`losses.policy_loss` with the config's knobs: LossOutput of (sum, count) pairs."""
    return losses.policy_loss(logp, old_logp, advantages, completion_mask,
                              ref_logp=ref_logp, row_mask=row_mask, **config.loss_options())
