"""The config schema and the defaults every recipe (configs/*.py) starts from; a recipe overrides
what it changes and says why.

`base()` is built from dataclasses (mmjax.config_schema): the sections the jobs turn into a
config dataclass come from that dataclass (grpo: mmjax.rl.grpo.GRPOConfig, optim:
mmjax.train.optim.OptimizerConfig, data.selection: SelectionConfig, score: ScoreConfig /
PismLevels / CmabConfig, eval: the mmjax.eval options), and the sections their consumer
(mmjax.jobs.build) reads field by field have their dataclass here (RunOptions, ModelOptions,
MeshConfig, DataConfig, RewardsConfig, SampleConfig, SftOptions); the top-level loop fields
are mmjax.train.trainer.TrainConfig's and GRPO's sampling options RolloutConfig's. Each default,
one-line help (with its source) and allowed set is written once, in its dataclass; `schema()`
is the whole tree, which `mmjax.main` checks a config against before anything loads and prints
with --help_config.

Also here: `parse_args`, the one parser of recipe arguments (`configs/x.py:tiny,steps=20`),
`shrink_to_tiny`, what every full-scale recipe's `tiny` argument applies, and `qwen7b_layout`,
the accelerator settings the full-scale recipes share, with the memory arithmetic behind them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Mapping

import ml_collections

from mmjax import config_schema
from mmjax.config_help import help_text
from mmjax.config_schema import borrowed

# config.mode -> the job mmjax.main runs: mmjax.jobs.<mode>.run(config, workdir).
MODES = ("demo", "eval", "grpo", "plan", "score", "sft")


def _field(default, text: str, choices=None):
    if isinstance(default, (tuple, list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=help_text(text, choices))
    return dataclasses.field(default=default, metadata=help_text(text, choices))


def _build(name: str):
    """A name of mmjax.jobs.build, imported only when a value is checked (build imports the models)."""
    def get():
        from mmjax.jobs import build  # pylint: disable=g-import-not-at-top
        return getattr(build, name)
    return get


def _attention_names():
    from mmjax.models.attention import IMPLEMENTATIONS  # pylint: disable=g-import-not-at-top
    return IMPLEMENTATIONS


def _remat_names():
    from mmjax.models.remat import REMAT_POLICIES  # pylint: disable=g-import-not-at-top
    return REMAT_POLICIES


def _presets():
    from mmjax.models.qwen2_5_vl import PRESETS  # pylint: disable=g-import-not-at-top
    return tuple(PRESETS)


def _containers():
    from mmjax.containers import CONTAINERS  # pylint: disable=g-import-not-at-top
    return tuple(CONTAINERS)


def _answer_formats():
    from mmjax.data.sft import ANSWER_FORMATS  # pylint: disable=g-import-not-at-top
    return ANSWER_FORMATS


# ---- the sections mmjax.jobs.build reads field by field ----------------------------------------

@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Top-level fields: the job, its seed and tokenizer, where its weights start (mmjax.main, mmjax.jobs.build)."""

    mode: str = _field("grpo", "which job mmjax.main runs: mmjax.jobs.<mode>.run (mmjax)", MODES)
    seed: int = _field(0, "params init, data order, sampling keys (mmjax)")
    tokenizer: str = _field("tiny", "tiny (tests, demo) | qwen2 (the real BPE, offline) | hf (model.hf_dir's own); "
                                    "mmjax.jobs.build.tokenizer", _build("TOKENIZERS"))
    init_from: str = _field("", "start from these weights instead of model.hf_dir / the preset (SPEC 2.4: GRPO after "
                                "SFT): a training workdir (its newest checkpoint's params; the optimizer starts "
                                "fresh), one checkpoint directory, or an HF folder; '' = off (mmjax.jobs.build.model)")
    force_unlock: bool = _field(False, "take over a workdir lock left by a run on another host "
                                       "(mmjax.jobs.workdir_lock)")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """config.model: which weights, their precision, attention and remat (mmjax.jobs.build.model)."""

    preset: str = _field("tiny", "mmjax.models.qwen2_5_vl.PRESETS (BENCH.md tiny), used without hf_dir", _presets)
    hf_dir: str = _field("", "a Hugging Face Qwen2.5-VL folder, e.g. Qwen2.5-VL-7B-Instruct; '' = the preset, random")
    dtype: str = _field("float32", "stored params: float32 master weights for training (mmjax)",
                        ("float32", "bfloat16"))
    compute_dtype: str = _field("", "'' = dtype; bfloat16 for accelerators (mmjax mixed precision)",
                                ("", "float32", "bfloat16"))
    frozen_dtype: str = _field("", "'' = dtype; stored params that never update: GRPO's reference copy (beta > 0) "
                                   "and the towers optim.freeze_vision / freeze_merger freeze. bfloat16 halves "
                                   "them, exactly from a bf16 checkpoint (Qwen's releases are; TRL's reference "
                                   "loads in the policy's torch_dtype); trainable params stay float32 (mmjax)",
                               ("", "float32", "bfloat16"))
    attention: str = _field("auto", "mmjax.models.attention.IMPLEMENTATIONS; auto picks per backend (MaxText's "
                                    "attention knob)", _attention_names)
    remat: str = _field("none", "decoder-layer remat policy, mmjax.models.remat.REMAT_POLICIES (MaxText names)",
                        _remat_names)
    vision_remat: str = _field("none", "the same for ViT blocks (mmjax.models.remat)", _remat_names)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """config.mesh: the device mesh's axes (mmjax.sharding.make_mesh); -1 = all remaining devices."""

    data: int = _field(1, "data-parallel axis size (mmjax.sharding); -1 = all remaining devices")
    fsdp: int = _field(1, "FSDP axis: 'embed' dims of params and optimizer state sharded over it (MaxText rules)")
    tensor: int = _field(1, "tensor-parallel axis: heads / mlp dims (MaxText rules)")


def _data_fields():
    # Imported here: DataConfig's defaults are its consumers' (each written once, there).
    from mmjax.data.adaptive_jigsaw import AdaptiveConfig  # pylint: disable=g-import-not-at-top
    from mmjax.data.depth_jigsaw import DepthJigsaw  # pylint: disable=g-import-not-at-top
    from mmjax.data.jigsaw import ImageJigsaw  # pylint: disable=g-import-not-at-top
    from mmjax.data.pipeline import PipelineConfig  # pylint: disable=g-import-not-at-top
    from mmjax.data.qa import QaSample  # pylint: disable=g-import-not-at-top
    from mmjax.data.video_jigsaw import VideoJigsaw  # pylint: disable=g-import-not-at-top
    from mmjax.difficulty.online_state import OnlineConfig  # pylint: disable=g-import-not-at-top
    from mmjax.difficulty.selection import SelectionConfig  # pylint: disable=g-import-not-at-top
    from mmjax.processing import ImageProcessorConfig  # pylint: disable=g-import-not-at-top
    return types.SimpleNamespace(**locals())


_D = _data_fields()


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """config.data: rows, task, prompt and batches (mmjax.jobs.build.source / transforms / dataset)."""

    source: str = _field("colour_choice", "mmjax.jobs.build.SOURCES: synthetic (colour_choice, shapes_vqa: QA rows; "
                                          "synthetic_video; synthetic_rgbd) or read from data.path", _build("SOURCES"))
    path: str = _field("", "a JSONL / parquet file or a *_folder source's folder (rgbd_folder: index.jsonl or its "
                           "folder)")
    data_root: str = _field("", "image paths are relative to this ('' = the file's folder)")
    num_samples: int = _field(1024, "synthetic sources only: rows")
    image_size: tuple = _field((112, 112), "synthetic sources only: (height, width) of each image or video frame")
    colour_graded: bool = _field(False, "colour_choice only: each row's shape size, contrast and distractors vary "
                                        "(mmjax.data.synthetic.GRADED_*), so rows differ in difficulty")
    seed: int = borrowed(_D.PipelineConfig, "seed", "shuffle and task randomness (mmjax.data.pipeline)")
    task: str = _field("qa", "mmjax.jobs.build.TASKS: qa (SPEC 2.3 rows) | jigsaw_image (SPEC 1.1) | jigsaw_video "
                             "(SPEC 1.2) | jigsaw_3d (SPEC 1.3)", _build("TASKS"))
    jigsaw_rows: int = borrowed(_D.ImageJigsaw, "rows", "image jigsaw grid rows; SPEC 1.1 default 3x3")
    jigsaw_cols: int = borrowed(_D.ImageJigsaw, "cols", "image jigsaw grid columns; SPEC 1.1")
    video_clips: int = borrowed(_D.VideoJigsaw, "num_clips", "SPEC 1.2 K clips (4 in the paper's ablations)")
    video_trim: float = borrowed(_D.VideoJigsaw, "trim", "SPEC 1.2 trim per clip end: 0.10 released code (default), "
                                                         "0.05 paper")
    video_sample_fps: float = borrowed(_D.VideoJigsaw, "sample_fps", "SPEC 1.2 frames sampled per second in a clip")
    video_min_frames: int = borrowed(_D.VideoJigsaw, "min_frames", "SPEC 1.2 frames per clip clamped to [2, 12], even")
    video_max_frames: int = borrowed(_D.VideoJigsaw, "max_frames", "SPEC 1.2 upper end of that clamp")
    video_min_seconds: float = borrowed(_D.VideoJigsaw, "min_seconds", "SPEC 1.2 shorter videos are skipped")
    video_frame_pixels: int = borrowed(_D.VideoJigsaw, "frame_pixels", "SPEC 1.2 each frame resized to about this "
                                                                       "many pixels")
    jigsaw_points: int = borrowed(_D.DepthJigsaw, "num_points", "SPEC 1.3 K depth points")
    container: str = borrowed(_D.QaSample, "container", "answer container of prompt and checker: answer (paper) | "
                                                        "boxed (released code); SPEC 1.4", _containers)
    system_prompt: bool = borrowed(_D.QaSample, "system_prompt", "QA rows: the SPEC 2.3 system prompt")
    prompt_layout: str = borrowed(_D.QaSample, "layout", "QA rows: image_first | question_first (released CMAB "
                                                         "script, SPEC 4); mmjax.data.prompts.LAYOUTS",
                                  ("image_first", "question_first"))
    min_pixels: int = borrowed(_D.ImageProcessorConfig, "min_pixels", "Qwen2VLImageProcessor min_pixels")
    max_pixels: int = borrowed(_D.ImageProcessorConfig, "max_pixels", "Qwen2VLImageProcessor max_pixels")
    min_vision_rows: int = _field(64, "smallest vision patch-row bucket (mmjax.processing.buckets)")
    bucket_lengths: tuple = _field((), "prompt-length buckets (pipeline and sampler); () = mmjax.processing.buckets' "
                                       "rule")
    max_prompt_length: int = _field(0, "0 = no limit; longer prompts are skipped, never truncated")
    batch_size: int = borrowed(_D.PipelineConfig, "batch_size", "prompts per micro-batch per process")
    worker_count: int = borrowed(_D.PipelineConfig, "worker_count", "grain worker processes (0 = in this process)")
    strict: bool = borrowed(_D.PipelineConfig, "strict", "raise on a bad row instead of counting and skipping it")
    selection: _D.SelectionConfig = dataclasses.field(default_factory=_D.SelectionConfig, metadata=help_text(
        "difficulty-aware selection of the rows (SPEC 2)"))
    adaptive: _D.AdaptiveConfig = dataclasses.field(default_factory=_D.AdaptiveConfig, metadata=help_text(
        "adaptive jigsaw size (GRPO, jigsaw tasks): the running solve rate moves the grid / clips / points "
        "(mmjax.data.adaptive_jigsaw; issue 23)"))
    online: _D.OnlineConfig = dataclasses.field(default_factory=_D.OnlineConfig, metadata=help_text(
        "online difficulty (GRPO): each row's pass rate from its rollouts, and the policy that draws the next "
        "rows (mmjax.difficulty.online_selection; issue 23)"))


@dataclasses.dataclass(frozen=True)
class RewardsConfig:
    """config.rewards: the reward functions, by name (mmjax.rewards registry; mmjax.jobs.build.reward)."""

    weights: dict = _field({"accuracy": 1.0}, "reward name -> weight, summed (TRL reward_weights); weight 0 = "
                                              "logged only; SPEC 2.3: one accuracy reward")
    options: dict = _field({}, "reward name -> its keyword options, e.g. {'jigsaw': {'container': 'boxed'}}")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """config.sample: restrictions of the rollout's vocabulary (mmjax.jobs.build.allowed_token_ids)."""

    allowed_tokens: tuple = _field((), "restrict sampling to these one-token strings (() = everything)")
    allow_eos: bool = _field(True, "with allowed_tokens: EOS stays allowed")


@dataclasses.dataclass(frozen=True)
class SftOptions:
    """config.sft: mode "sft" only (mmjax.jobs.sft, mmjax.data.sft.AnswerTokens)."""

    num_epochs: int = _field(1, "passes over the data (SPEC 2.4 SFT: 5); 0 = repeat until max_steps")
    answer_format: str = _field("plain", "plain: the solution | think: <think></think><answer>X</answer> (SPEC 2.3 "
                                         "layout); mmjax.data.sft.ANSWER_FORMATS", _answer_formats)
    max_answer_length: int = _field(0, "answer tokens with EOS; 0 = no limit; longer answers are skipped, never "
                                       "truncated")
    bucket_lengths: tuple = _field((), "answer-length buckets; () = mmjax.processing.buckets' rule")


@dataclasses.dataclass(frozen=True)
class EvalFiles:
    """config.eval (mode "eval"): which benchmark files, and the prompt (mmjax.jobs.eval)."""

    benchmarks: dict = _field(
        {"mathvista": "", "ocrbench": "", "mmstar": "", "mmvp": "", "da2k": "", "jigsaw": "", "qa": "", "mmmu": "",
         "hallusionbench": ""},
        "benchmark name -> JSONL file ('' = not run); the name is its format or starts with '<format>_' "
        "(mmjax.eval.benchmarks.FORMATS)")
    system_prompt: bool = _field(True, "the SPEC 2.3 system prompt asking for <think> and the container")
    synthetic_rows: int = _field(8, "rows of a benchmark given as 'synthetic' (mmjax.eval.synthetic_benchmarks)")


@dataclasses.dataclass(frozen=True)
class DemoEval:
    """config.eval (mode "demo"): the demo's held-out greedy evaluation (mmjax.jobs.demo)."""

    num_batches: int = _field(8, "held-out batches of data.batch_size prompts, greedy")
    seed_offset: int = _field(1000, "held-out split: data.seed + this (a different synthetic seed)")


# The score job's own fields (mmjax.jobs.build.ScoreJobOptions, whose defaults they are, carries no help).
SCORE_JOB_HELP = {
    "write_jsonl": "scores.jsonl beside scores.parquet (mmjax.jobs.score)",
    "max_batches": "0 = the whole dataset; N stops after N batches, a rerun resumes (mmjax.jobs.score)",
    "progress": "a tqdm bar over the rows (mmjax.jobs.score)",
}


# ---- the schema ------------------------------------------------------------------------------

@functools.cache
def base_schema() -> config_schema.Section:
    """The sections every recipe has (what base() builds)."""
    from mmjax.rl.grpo import GRPOConfig  # pylint: disable=g-import-not-at-top
    from mmjax.rl.objective import RolloutConfig  # pylint: disable=g-import-not-at-top
    from mmjax.train.optim import OptimizerConfig  # pylint: disable=g-import-not-at-top
    from mmjax.jobs.plan.options import PlanConfig  # pylint: disable=g-import-not-at-top
    from mmjax.train.trainer import TrainConfig  # pylint: disable=g-import-not-at-top
    from mmjax.models.lora import LoraSpec  # pylint: disable=g-import-not-at-top
    S = config_schema.section  # noqa: N806
    # The loop's fields (TrainConfig) and GRPO's sampling options sit at the top level, as in TRL;
    # the sampling seed is the run's seed (RunOptions') and the allowed tokens come from config.sample.
    return S(RunOptions, TrainConfig, RolloutConfig, exclude=("allowed_token_ids",),
             model=S(ModelOptions), mesh=S(MeshConfig), data=S(DataConfig),
             grpo=S(GRPOConfig),
             optim=S(OptimizerConfig, exclude=("total_steps",)),  # total_steps: the job's (max_steps, SFT's epochs)
             rewards=S(RewardsConfig), sample=S(SampleConfig), sft=S(SftOptions), plan=S(PlanConfig),
             lora=S(LoraSpec))


@functools.cache
def score_schema() -> config_schema.Section:
    """config.score (mode "score", configs/difficulty_score.py): mmjax.jobs.build.score_configs reads it."""
    from mmjax.difficulty.cmab import CmabConfig  # pylint: disable=g-import-not-at-top
    from mmjax.difficulty.pism import PismLevels  # pylint: disable=g-import-not-at-top
    from mmjax.difficulty.scoring import ScoreConfig  # pylint: disable=g-import-not-at-top
    from mmjax.jobs.build import ScoreJobOptions  # pylint: disable=g-import-not-at-top
    S = config_schema.section  # noqa: N806
    return S(ScoreConfig, ScoreJobOptions, help=SCORE_JOB_HELP, pism=S(PismLevels), cmab=S(CmabConfig))


@functools.cache
def eval_schema() -> config_schema.Section:
    """config.eval (mode "eval", configs/eval.py): mmjax.jobs.eval reads it into these options."""
    from mmjax.eval.benchmarks import ReadOptions  # pylint: disable=g-import-not-at-top
    from mmjax.eval.metrics import ScoreOptions  # pylint: disable=g-import-not-at-top
    from mmjax.eval.runner import RunnerConfig  # pylint: disable=g-import-not-at-top
    # RunnerConfig's min_vision_rows and bucket_lengths are config.data's.
    return config_schema.section(EvalFiles, ReadOptions, ScoreOptions, RunnerConfig,
                                 exclude=("min_vision_rows", "bucket_lengths"))


# Sections only some modes have, by mode (config.eval is a different section in demo and eval).
MODE_SECTIONS = {"score": {"score": score_schema}, "eval": {"eval": eval_schema},
                 "demo": {"eval": lambda: config_schema.section(DemoEval)}}


@functools.cache
def schema(mode: str = "") -> config_schema.Section:
    """The schema of a config of this mode: base_schema() and the mode's own sections."""
    return base_schema().with_children(**{name: get() for name, get in MODE_SECTIONS.get(mode, {}).items()})


def mode_section(mode: str, name: str) -> ml_collections.ConfigDict:
    """A section only `mode` has (MODE_SECTIONS), at its defaults: `c.score = mode_section("score", "score")`."""
    return MODE_SECTIONS[mode][name]().build()


def schema_of(config) -> config_schema.Section:
    """The schema of `config`; mode "plan" plans another job's recipe, whose sections it has."""
    mode = config.get("mode", "") if hasattr(config, "get") else ""
    if mode == "plan" and "plan" in config:
        mode = config.plan.get("job", "")
    return schema(mode)


def check(config) -> list[str]:
    """Every field of `config` whose value is outside its allowed set, as one line each."""
    return config_schema.check(config, schema_of(config))


def base() -> ml_collections.ConfigDict:
    """Every section every recipe has, at its dataclass defaults."""
    return base_schema().build()


# ---- recipe arguments ------------------------------------------------------------------------

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_args(arg: str | None, recipe: str, help: Mapping[str, str] | None = None, /,  # noqa: A002
               **defaults) -> types.SimpleNamespace:
    """`configs/x.py:tiny,steps=20` -> namespace(tiny=True, steps=20, ...) (big_vision's parse_arg).

    `defaults` name every argument the recipe takes; each default fixes the argument's type
    (bool, int, float or str). Items are comma-separated `name=value`; a bare `name` sets a
    bool argument True (`tpu` = `tpu=true`; false / 0 / no turn it off). Spaces around items
    and empty items are ignored, so "" and None mean the defaults. An unknown name, a value
    that is not of its argument's type or a name given twice raises ValueError naming the
    recipe, the argument and every allowed one with its type, default and help (`help`:
    name -> one line).
    """
    help_ = help or {}
    for name, default in defaults.items():
        if type(default) not in (bool, int, float, str):
            raise TypeError(f"{recipe}: argument {name}'s default {default!r} is not a bool, int, float or str")

    def allowed() -> str:
        items = [f"{n}: " + (f"{help_[n]} " if help_.get(n) else "") + f"({type(d).__name__}, default {d!r})"
                 for n, d in defaults.items()]
        return "; ".join(items) or "none"

    def fail(why: str):
        raise ValueError(f"{recipe}: {why}; allowed (comma-separated name or name=value): {allowed()}")

    values = dict(defaults)
    given: set[str] = set()
    items = [item.strip() for item in (arg or "").split(",")]
    unknown = [item.split("=", 1)[0].strip() for item in items if item and item.split("=", 1)[0].strip()
               not in defaults]
    if unknown:
        close = [m for name in unknown for m in difflib.get_close_matches(name, list(defaults), n=1)]
        fail(f"unknown config argument(s) {unknown} in {arg!r}" + (f" (did you mean {close}?)" if close else ""))
    for item in filter(None, items):
        name, has_value, raw = (part.strip() for part in item.partition("="))
        if name in given:
            fail(f"config argument {name!r} given twice in {arg!r}")
        given.add(name)
        default = defaults[name]
        kind = type(default).__name__
        if not has_value:
            if not isinstance(default, bool):
                fail(f"config argument {name!r} needs a value: {name}=<{kind}>")
            values[name] = True
            continue
        try:
            values[name] = _convert(raw, default)
        except ValueError:
            fail(f"config argument {name}={raw!r} is not a{'n' if kind == 'int' else ''} {kind} "
                 f"(default {default!r})")
    return types.SimpleNamespace(**values)


def _convert(raw: str, default):
    if isinstance(default, bool):
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


# ---- the `tiny` argument: a full-scale recipe at laptop scale ---------------------------------

TINY_HELP = ("the recipe as written at laptop-CPU scale (recipe.shrink_to_tiny): the tiny random model and "
             "tokenizer, synthetic data in the task's format, a 1-device mesh, 10 steps")
STEPS_HELP = "optimizer steps (max_steps); 0 = the recipe's (10 with tiny)"
LORA_HELP = ("LoRA adapters instead of full fine-tuning (recipe.apply_lora: rank 32 on every decoder projection, "
             "10x the learning rate, the frozen base in bf16)")


def apply_lora(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The recipe trained through LoRA adapters (issue 25, mmjax.models.lora), with the settings
    "LoRA Without Regret" (Schulman et al., Thinking Machines, 2025) found to match full
    fine-tuning: adapters on every decoder projection, attention and MLP (lora.targets' default);
    rank 32 with alpha 32 (its setting; RL needs little capacity: rank 1 matched full RL there);
    the learning rate 10x the full fine-tuning one (its measured optimum ratio). The whole base,
    vision tower and merger included, is frozen and stored in bf16 (model.frozen_dtype: Qwen's
    releases are bf16, so exactly the released weights). The layout stays the recipe's."""
    c.lora.rank = 32
    c.lora.alpha = 32.0
    c.optim.learning_rate = float(f"{c.optim.learning_rate * 10:.6g}")
    c.model.frozen_dtype = "bfloat16"
    return c

# Synthetic rows in each task's format (mmjax.jobs.build.SOURCES) and what a tiny prompt holds.
TINY_DATA = {
    # 84 px images (the smallest a 3x3 jigsaw takes, SPEC 1.1): 28 px tiles, one vision token each.
    "jigsaw_image": dict(source="shapes_vqa", image_size=(84, 84), min_pixels=28 * 28, max_pixels=28 * 28),
    # 24 s videos at 2 fps (the shortest a video jigsaw takes, SPEC 1.2): 2 frames of 56x56 a
    # clip, 4 vision tokens.
    "jigsaw_video": dict(source="synthetic_video", image_size=(56, 56), video_frame_pixels=56 * 56,
                         video_max_frames=2, min_pixels=56 * 56, max_pixels=56 * 56),
    # RGB-D scenes large enough for 6 points 40 px apart (SPEC 1.3).
    "jigsaw_3d": dict(source="synthetic_rgbd", image_size=(168, 224), min_pixels=28 * 28, max_pixels=56 * 56),
    # QA rows with a choice task the accuracy reward routes (SPEC 2.3): 4 vision tokens each.
    "qa": dict(source="colour_choice", image_size=(56, 56), min_pixels=56 * 56, max_pixels=56 * 56),
}


def shrink_to_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The recipe `c` as written, at a size a laptop CPU runs in a couple of minutes.

    Changes only what scale needs: the tiny random model (preset "tiny", float32) and the local
    tokenizer instead of model.hf_dir, a 1-device mesh, synthetic rows in the task's format
    (TINY_DATA) instead of data.path and the score file, 2 prompts a micro-batch and no
    accumulation, G = 2 completions of at most 8 tokens, 10 steps. The task, rewards, GRPO
    algorithm, optimiser, remat and selection rules stay the recipe's, so a recipe that stops
    matching the code fails at this size too (tests/test_recipes.py).
    """
    c.tokenizer = "tiny"
    c.init_from = ""
    m = c.model
    m.hf_dir, m.preset, m.dtype, m.compute_dtype = "", "tiny", "float32", ""
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    if c.max_steps:  # SFT's 0 (= sft.num_epochs passes) stays: a tiny pass is short
        c.max_steps = 10
    c.save_steps = 5
    c.gradient_accumulation_steps = 1
    d = c.data
    d.path, d.data_root, d.num_samples = "", "", 32
    d.batch_size, d.worker_count, d.min_vision_rows = 2, 0, 16
    d.max_prompt_length = 0
    for key, value in TINY_DATA[d.task].items():
        d[key] = value
    d.selection.score_file = ""  # every synthetic row (a levels subset then warns that it has no scores)
    c.grpo.num_generations = 2
    c.grpo.max_completion_length = 8
    if c.mode == "sft":
        c.sft.num_epochs = 1
        c.sft.max_answer_length = 0
    if "score" in c:  # mode "score": few attempts, short answers, small sampler calls
        s = c.score
        s.ratios, s.attempts, s.max_new_tokens = (0.0, 0.5), 2, 8
        s.sampler_batch, s.cmab_batch, s.host_threads = 8, 2, 2
        # The tiny model has 2 decoder layers: the `paper` CMAB definition needs 3, `code` takes one.
        s.cmab.definition, s.cmab.layer = "code", -1
        s.progress = False
    return c


# ---- Qwen2.5-VL-7B at full scale: the memory arithmetic the recipes share --------------------
#
# Parameters: 8.29e9 (mmjax.models.qwen2_5_vl.PRESETS["7b"]: 7.62e9 LLM + 0.68e9 ViT/merger).
# Training state per parameter: fp32 master weight 4 B + AdamW m and v 8 B = 12 B -> 99.5 GB;
# the fp32 gradient sum the learner accumulates over micro-batches plus one micro-batch's
# gradients: 2 x 4 B -> 66.3 GB; the bfloat16 compute copy: 2 B -> 16.6 GB. Sharded with FSDP
# over 8 GPUs: 12.4 + 8.3 + 2.1 = 22.8 GB per device, so a 7B model fits one 8 x 80 GB host
# only because every one of these is sharded (mesh fsdp=8: "embed" dims over fsdp,
# mmjax.sharding.DEFAULT_RULES; 3584, 1280 and 5120 all divide by 8 and by 32).
# What is left (80 - 22.8 = 57 GB, minus ~15 GB kept free for XLA workspace, cuDNN and
# fragmentation: ~40 GB) holds the activations of one micro-batch, with remat "full" (each
# decoder layer keeps only its bf16 input, the rest is recomputed in the backward pass):
#   kept inputs   28 layers x 3584 x 2 B      = 200.7 KB per token of each sequence
#   one layer being recomputed (q/k/v/o 8192 + MLP gate/up/act/grad 4 x 18944, x 2 B)
#                                             = ~170 KB per token
#   -> ~370 KB per token: 0.76 GB for a 2048-token sequence, 1.67 GB at 4.5K, 2.5 GB at 6.8K.
# The LM head runs in fp32 chunks over completion tokens only (never [N, T, V]): small.
# The ViT runs once per prompt (not per completion) with vision_remat "full": 32 blocks x
# 1280 x 2 B = 82 KB per patch row (4 patch rows per vision token).
# The rollout's KV cache: 28 layers x 2 (k, v) x 4 KV heads x 128 x 2 B = 57 KB per token of
# each sequence; it is freed before the update runs, so the larger of the two counts.
# Each recipe sizes its micro-batch (data.batch_size prompts x G completions, shared over the
# devices) against the ~40 GB, and sets gradient_accumulation_steps so that
# batch_size x gradient_accumulation_steps x processes = the paper's prompts per step; the
# prompts of a micro-batch must split evenly over the batch axes (data x fsdp).
# Checked by `--config.mode=plan` (mmjax.jobs.plan; README "Will it fit?"), per device on fsdp=8:
# XLA's figures for the training state (params, AdamW moments, gradients: configs/
# difficulty_grpo.py 16.6 GB) and the rollout's KV cache (0.53 GB) equal this arithmetic; the
# update's activations (arithmetic 8.1 GB for difficulty_grpo) come out at 113 GB on XLA:CPU,
# an upper bound (CPU upcasts bfloat16 and defeats remat's schedule), unsettled until a GPU run.


def qwen7b_layout(c: ml_collections.ConfigDict, tpu: bool = False) -> ml_collections.ConfigDict:
    """Model, precision, remat and mesh settings for Qwen2.5-VL-7B on one 8-GPU host or a TPU slice.

    The weights come from `--config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct` (SPEC: both
    papers train Qwen2.5-VL-7B-Instruct); the tokenizer is read from the same folder.
    """
    c.tokenizer = "hf"  # the model's own tokenizer, from model.hf_dir (mmjax.jobs.build.tokenizer)
    c.model.preset = "7b"  # only used without hf_dir: a random 7B, e.g. to measure throughput
    c.model.dtype = "float32"  # mmjax: fp32 master weights, so 1e-6 / 5e-7 updates are not lost to bf16 rounding
    c.model.compute_dtype = "bfloat16"  # mmjax mixed precision: bf16 matmuls and activations (as both papers)
    c.model.attention = "auto"  # mmjax.models.attention: cuDNN flash on GPU, splash on TPU, explicit to decode
    c.model.remat = "full"  # the arithmetic above: ~370 KB a token, against several MB without remat
    c.model.vision_remat = "full"  # ViT: 9 tiles x 256 tokens x 4 rows would keep ~12 GB a prompt without
    c.data.worker_count = 8  # mmjax: decode, tile and process on 8 host processes while the devices sample
    c.mesh.data = 1
    c.mesh.tensor = 1  # mmjax: 7B fits with FSDP alone; tensor parallelism would add collectives per layer
    if tpu:
        # A TPU slice: FSDP over 8 chips and tensor parallelism over the rest (v5p-64 = 32 chips
        # x 95 GB: 8 x 4, the training state split 32 ways: 22.8 GB x 8 / 32 = 5.7 GB per chip).
        # Not FSDP over all 32: the sampler and the update split the micro-batch's prompts over
        # the batch axes (data x fsdp), and these recipes' 8 or 16 prompts do not split 32 ways
        # (mode=plan: "cannot be sharded over mesh axis 'fsdp' (size 32)"). Tensor parallelism
        # splits KV heads, 4 in the 7B: a slice of up to 32 chips; on a larger one raise fsdp
        # with the prompts. Multi-host: one process per host, joined by jax.distributed
        # (mmjax.main); each reads its own data shard, and data.batch_size is per process
        # (tests/rl/test_multiprocess.py: 2 processes equal 1). Every process gathers all
        # processes' pixel rows for the replicated vision tower each micro-batch.
        c.mesh.fsdp = 8
        c.mesh.tensor = -1
    else:
        c.mesh.fsdp = 8  # one 8-GPU host: FSDP over its 8 devices (see the arithmetic above)
    return c


# ---- Visual Jigsaw: the GRPO, optimiser and reward settings its three tasks share -----------

# The arguments of the three jigsaw recipes (`configs/jigsaw_image.py:code,tpu`): defaults and help.
JIGSAW_ARGS = dict(code=False, tpu=False, tiny=False, steps=0, lora=False)
JIGSAW_HELP = {
    "lora": LORA_HELP,
    "code": "the released code's reward (JIGSAW_PRESETS['code']): \\boxed{} answers read as released, "
            "partial credit only for K > 4, -0.5 repetition penalty (SPEC 1.4, 1.5); default: the paper's",
    "tpu": "a TPU slice (v5p-64): FSDP over 8 chips x tensor parallelism over the rest, batches per process "
           "sized for it (see the recipe)",
    "tiny": TINY_HELP,
    "steps": STEPS_HELP,
}


def visual_jigsaw(c: ml_collections.ConfigDict, reward_preset: str = "paper") -> ml_collections.ConfigDict:
    """SPEC 1.6's GRPO recipe and the SPEC 1.5 jigsaw reward (`reward_preset`: JIGSAW_PRESETS key)."""
    from mmjax.rewards import JIGSAW_PRESETS  # pylint: disable=g-import-not-at-top
    from mmjax.rl.grpo import GRPO_PRESETS  # pylint: disable=g-import-not-at-top

    # SPEC 1.6 (GRPO_PRESETS["jigsaw"]): group 16, temperature 1.0, top_p 1, beta 0 (no KL, so no
    # reference model is kept), epsilon 0.2 with dual-clip c = 3 (delta), token-mean loss
    # (loss_type "dapo"), num_iterations 1 (one update per rollout batch, the sampler's
    # log-probs are old_logp), responses up to 2048 tokens.
    for key, value in GRPO_PRESETS["jigsaw"].items():
        c.grpo[key] = value
    c.grpo.scale_rewards = "group"  # SPEC 3 / TRL default: A = (r - mean) / (std + 1e-4) per group
    c.optim.learning_rate = 1e-6  # SPEC 1.6
    c.optim.schedule = "constant"  # SPEC 1.6 constant, no warmup
    c.optim.warmup_ratio = 0.0
    c.optim.weight_decay = 0.01  # SPEC 1.6 AdamW
    c.optim.max_grad_norm = 1.0  # SPEC 1.6
    c.optim.freeze_vision = False  # SPEC 1.6 trains the whole model (freezing is SPEC 2.4's SFT only)
    c.optim.freeze_merger = False

    # SPEC 1.5 reward: paper default (format 0.2 + accuracy 1 / gamma * fraction for a valid
    # permutation) or the released code's preset. The prompt's container (SPEC 1.4) and the
    # checker's are one field: the rewards hold a reference to data.container, so
    # --config.data.container=boxed changes both.
    preset = dict(JIGSAW_PRESETS[reward_preset])
    c.data.container = preset.pop("container", "answer")  # SPEC 1.4: answer (paper) | boxed (released code)
    container = c.data.get_ref("container")
    c.rewards.weights = ml_collections.ConfigDict({
        "jigsaw": 1.0,  # SPEC 1.5, the training reward
        "jigsaw_exact": 0.0,  # mmjax: weight 0 = logged only, the solve rate (rewards/jigsaw_exact/mean)
    })
    jigsaw_options = ml_collections.ConfigDict(preset)  # {} (paper) or partial_min_pieces / repetition_penalty
    jigsaw_options.container = container
    exact_options = ml_collections.ConfigDict()
    exact_options.container = container
    if "parser" in jigsaw_options:  # the solve rate reads answers as the training reward does
        exact_options.parser = jigsaw_options.get_ref("parser")
    c.rewards.options = ml_collections.ConfigDict({"jigsaw": jigsaw_options, "jigsaw_exact": exact_options})

    c.save_steps = 50  # mmjax: a checkpoint every 5% of a 1000-step run
    c.save_total_limit = 3
    c.logging_steps = 1
    return c
