"""CMAB: Cross-Modality Attention Balance scores and difficulty levels (SPEC.md 2.2).

Input is what the sampler captures with capture="cmab": for each generated token t, layer l
and head h, the attention mass of the query row that produced t on three key groups
(`mmjax.models.capture`: visual placeholders, all other prompt text, prompt text before the
first visual placeholder), plus the number of prompt positions in each group.

Definitions (heads are averaged before any ratio):
  * `paper`: rho(l, t) = S_img / S_txt; rho_t = exp(mean over layers 2..L-1 (1-based) of
    log(rho + 1e-8)); score = mean of rho_t over the generated tokens.
  * `code` (released code): at one 0-based `layer`, a_img(t) = S_img / #image positions,
    a_txt(t) = S_before / #text positions before the first image; t = 1 is skipped;
    score = sum_t a_img / sum_t a_txt.
Levels, for correctly answered samples only (others are `unsolved`): `hard` near balance,
`medium` further out, `easy` furthest (thresholds below). A correct sample whose score is
undefined (e.g. `code` with a one-token answer) is `unscored` and counted in a warning.

Prompt layout (`DEFAULT_LAYOUT`, config.data.prompt_layout): the released script builds its
prompt as [question text, image], so its "text before the first image" is the system /
template header plus the question. `code` scores are comparable with the released ones
only when the prompts are built "question_first"; with "image_first" (the data's own
order: the image, then the question) that group holds the header alone. See `CmabConfig`
for the differences that remain.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mmjax.config_help import choice_errors, help_text
from mmjax.models.capture import TEXT, TEXT_BEFORE_VISUAL, VISUAL

log = logging.getLogger(__name__)

LEVELS = ("unsolved", "easy", "medium", "hard")
UNSCORED = "unscored"
DEFINITIONS = ("paper", "code")
LOG_EPS = 1e-8
# The QA prompt layout (mmjax.data.prompts.LAYOUTS) each definition's scores should be taken
# with: `code` reproduces the released script's [question, image] prompt (SPEC 4).
DEFAULT_LAYOUT = {"paper": "image_first", "code": "question_first"}


@dataclasses.dataclass(frozen=True)
class CmabConfig:
    """How scores are computed and levelled (SPEC.md 2.2).

    `code` follows the released CMAB script's score (one layer, per-position means, the
    first generated token skipped) and is comparable with its published scores only on
    prompts built with layout "question_first" (`DEFAULT_LAYOUT["code"]`), where the text
    before the first image is the question, as in the released [question, image] prompt.

    Where the released script is wrong (SPEC 4), mmjax does not follow it: the script
    applies ToTensor() and then the Qwen processor, which rescales a second time (pixel
    std about 1.09 -> 0.14, nearly black images); mmjax feeds properly processed pixels,
    so even with "question_first" its `code` scores are not numerically the published
    ones. Other remaining differences: the released prompt is a few-shot step-by-step
    text with `\\boxed{}` answers plus the question, under the chat template's default
    system message, where mmjax uses the row's prompt and config.data.system_prompt; the
    released script scores one fresh sampled generation (temperature 0.5, top-p 0.9, up
    to 2048 tokens, stopping at "<end>") of samples its MCTS search solved, where mmjax
    scores the generation its sampler makes; it uses only a row's first image; and it
    skips a token whose text attention is exactly 0, which mmjax keeps in both sums.
    """

    definition: str = dataclasses.field(default="paper", metadata=help_text(
        "paper (all layers but the first and last) | code (the released code's one layer); SPEC 2.2",
        choices=DEFINITIONS))
    layer: int = dataclasses.field(default=20, metadata=help_text(
        "`code` only: 0-based decoder layer, negative from the end; SPEC 2.2 20 of the 7B's 28 (released code)"))
    # Fixed thresholds (SPEC.md 2.2): easy < easy_below or > easy_above; medium in
    # [easy_below, hard_from) or (hard_to, easy_above]; hard in [hard_from, hard_to].
    easy_below: float = dataclasses.field(default=0.1, metadata=help_text(
        "fixed: easy if score < this, or > easy_above; SPEC 2.2 0.1"))
    hard_from: float = dataclasses.field(default=0.4, metadata=help_text(
        "fixed: hard if score in [hard_from, hard_to], medium between easy and hard; SPEC 2.2 0.4"))
    hard_to: float = dataclasses.field(default=1.6, metadata=help_text("fixed: hard's upper end; SPEC 2.2 1.6"))
    easy_above: float = dataclasses.field(default=1.9, metadata=help_text("fixed: easy above this; SPEC 2.2 1.9"))
    # "fixed" uses the thresholds above; "quantile" ranks solved samples by |score - center|
    # and gives the closest `target_mix[2]` share `hard`, the next `target_mix[1]` `medium`.
    mode: str = dataclasses.field(default="fixed", metadata=help_text(
        "fixed (the thresholds above) | quantile (levels reproducing target_mix); SPEC 2.2",
        choices=("fixed", "quantile")))
    center: float = dataclasses.field(default=1.0, metadata=help_text(
        "quantile: solved samples ranked by |score - center| (balance); SPEC 2.2"))
    target_mix: tuple[float, float, float] | None = dataclasses.field(default=None, metadata=help_text(
        "quantile: (easy, medium, hard) shares or counts, e.g. SPEC 2.2's reasoning (2170, 3604, 2166); "
        "None / () = none (fixed mode)"))

    def __post_init__(self):
        errors = choice_errors(self)  # definition, mode
        if errors:
            raise ValueError("cmab " + "; ".join(errors))
        if not self.easy_below <= self.hard_from <= self.hard_to <= self.easy_above:
            raise ValueError("cmab thresholds must satisfy easy_below <= hard_from <= hard_to <= easy_above; "
                             f"got {self.easy_below}, {self.hard_from}, {self.hard_to}, {self.easy_above}")
        if self.mode == "quantile":
            mix = self.target_mix
            if mix is None or len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
                raise ValueError(f"cmab quantile mode needs target_mix=(easy, medium, hard) >= 0; got {mix}")


@dataclasses.dataclass(frozen=True)
class CmabResult:
    scores: np.ndarray  # float64 [N]; NaN where undefined
    levels: np.ndarray  # str [N]: one of LEVELS or UNSCORED


def _head_mean(masses: np.ndarray) -> np.ndarray:
    """[N, T, L, H, G] -> [N, T, L, G] (already head-averaged [N, T, L, G] passes through)."""
    masses = np.asarray(masses, np.float64)
    if masses.ndim == 5:
        return masses.mean(axis=3)
    if masses.ndim == 4:
        return masses
    raise ValueError(f"attention masses must be [N, T, layers, heads, groups] or [N, T, layers, groups]; "
                     f"got shape {masses.shape}")


def check_layer(layer: int, num_layers: int) -> int:
    """A 0-based layer index (negative counts from the end) checked against the model depth."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"cmab layer {layer} is outside the model's {num_layers} decoder layers "
                         f"(valid 0..{num_layers - 1}, or negative from the end); set CmabConfig.layer")
    return layer % num_layers


def paper_scores(masses: np.ndarray, completion_mask: np.ndarray) -> np.ndarray:
    """SPEC.md 2.2 `paper`: mean over tokens of the layer-geometric-mean image/text ratio."""
    m = _head_mean(masses)
    num_layers = m.shape[2]
    if num_layers < 3:
        raise ValueError(f"the `paper` CMAB definition averages layers 2..L-1 and needs L >= 3; the model has "
                         f"{num_layers}")
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = m[..., VISUAL] / m[..., TEXT]                                  # [N, T, L]
        rho_t = np.exp(np.mean(np.log(rho[:, :, 1:-1] + LOG_EPS), axis=2))  # [N, T]
        mask = np.asarray(completion_mask, bool)
        return np.where(mask, rho_t, 0.0).sum(axis=1) / mask.sum(axis=1)


def code_scores(masses: np.ndarray, completion_mask: np.ndarray, group_sizes: np.ndarray,
                layer: int) -> np.ndarray:
    """SPEC.md 2.2 `code`: ratio of summed per-position means at one layer, first token skipped."""
    m = _head_mean(masses)
    layer = check_layer(layer, m.shape[2])
    sizes = np.asarray(group_sizes, np.float64)
    mask = np.asarray(completion_mask, bool).copy()
    mask[:, 0] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        a_img = m[:, :, layer, VISUAL] / sizes[:, None, VISUAL]
        a_txt = m[:, :, layer, TEXT_BEFORE_VISUAL] / sizes[:, None, TEXT_BEFORE_VISUAL]
        return np.where(mask, a_img, 0.0).sum(axis=1) / np.where(mask, a_txt, 0.0).sum(axis=1)


def scores(masses, completion_mask, group_sizes, config: CmabConfig) -> np.ndarray:
    sizes = np.asarray(group_sizes)
    no_visual = np.flatnonzero(sizes[:, VISUAL] == 0)
    if no_visual.size:
        raise ValueError(f"CMAB needs image or video tokens in every prompt; rows {no_visual.tolist()[:20]} "
                         f"have none (filter text-only samples before scoring)")
    if config.definition == "paper":
        return paper_scores(masses, completion_mask)
    return code_scores(masses, completion_mask, sizes, config.layer)


def fixed_levels(scores: np.ndarray, correct: np.ndarray, config: CmabConfig) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    c = config
    hard = (s >= c.hard_from) & (s <= c.hard_to)
    medium = ((s >= c.easy_below) & (s < c.hard_from)) | ((s > c.hard_to) & (s <= c.easy_above))
    easy = (s < c.easy_below) | (s > c.easy_above)
    levels = np.select([hard, medium, easy], ["hard", "medium", "easy"], UNSCORED).astype(object)
    levels[~np.asarray(correct, bool)] = "unsolved"
    return levels


def quantile_levels(scores: np.ndarray, correct: np.ndarray, config: CmabConfig) -> np.ndarray:
    """Levels reproducing `target_mix` among the solved, scored samples, by distance from `center`."""
    s = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    levels = np.full(s.shape, UNSCORED, dtype=object)
    levels[~correct] = "unsolved"
    idx = np.flatnonzero(correct & np.isfinite(s))
    mix = np.asarray(config.target_mix, np.float64) / np.sum(config.target_mix)
    order = idx[np.argsort(np.abs(s[idx] - config.center), kind="stable")]
    n_hard = int(round(mix[2] * len(order)))
    n_medium = int(round((mix[2] + mix[1]) * len(order))) - n_hard
    levels[order[:n_hard]] = "hard"
    levels[order[n_hard:n_hard + n_medium]] = "medium"
    levels[order[n_hard + n_medium:]] = "easy"
    return levels


def score_batch(masses, completion_mask, group_sizes, correct, config: CmabConfig = CmabConfig()) -> CmabResult:
    """Per-sample CMAB scores and levels.

    masses: [N, T, layers, heads, 3] (or head-averaged [N, T, layers, 3]) from the sampler;
    completion_mask: bool [N, T]; group_sizes: [N, 3]; correct: bool [N].
    """
    completion_mask = np.asarray(completion_mask, bool)
    correct = np.asarray(correct, bool)
    n = completion_mask.shape[0]
    if np.shape(masses)[:2] != completion_mask.shape or correct.shape != (n,) or np.shape(group_sizes)[0] != n:
        raise ValueError(f"shapes disagree: masses {np.shape(masses)}, completion_mask {completion_mask.shape}, "
                         f"group_sizes {np.shape(group_sizes)}, correct {correct.shape}")
    s = scores(masses, completion_mask, group_sizes, config)
    levels = (quantile_levels if config.mode == "quantile" else fixed_levels)(s, correct, config)
    unscored = np.flatnonzero(levels == UNSCORED)
    if unscored.size:
        log.warning("CMAB: %d correct samples have no defined %s score (rows %s); level %r",
                    unscored.size, config.definition, unscored.tolist()[:20], UNSCORED)
    return CmabResult(scores=s, levels=levels)


def score_rollout(rollout, correct, config: CmabConfig = CmabConfig()) -> CmabResult:
    """score_batch on a `mmjax.models.sampler.Rollout` generated with capture="cmab"."""
    if rollout.attention_masses is None:
        raise ValueError('the rollout holds no attention masses: generate it with capture="cmab"')
    return score_batch(rollout.attention_masses, rollout.mask, rollout.group_sizes, correct, config)
