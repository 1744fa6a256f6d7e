"""Defaults every recipe (configs/*.py) starts from; a recipe overrides what it changes and says why.

Each field has a one-line comment with its source (TRL / HF TrainingArguments / SPEC.md /
mmjax). The GRPO and optimiser fields mirror mmjax.rl.grpo.GRPOConfig and
mmjax.train.optim.OptimizerConfig, whose help strings cite their sources in full.

Also here: `parse_args`, the one parser of recipe arguments (`configs/x.py:code,tpu`), and
`qwen7b_layout`, the accelerator settings the full-scale recipes share, with the memory
arithmetic behind them.
"""

from collections.abc import Mapping

import ml_collections


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "grpo"  # which job mmjax.main runs (mmjax.main.MODES): grpo | demo | score | sft | eval
    c.seed = 0  # params init, data order, sampling keys (mmjax)
    c.tokenizer = "tiny"  # tiny (tests, demo) | qwen2 (the real BPE, offline) | hf (from model.hf_dir)

    c.max_steps = 100  # optimizer steps (TRL max_steps)
    c.save_steps = 50  # checkpoint every N steps (TRL save_steps)
    c.logging_steps = 1  # metrics every N steps (TRL logging_steps)
    c.save_total_limit = 3  # checkpoints kept (TRL save_total_limit)
    c.gradient_accumulation_steps = 1  # micro-batches per step (TRL)
    c.filter_zero_std_groups = False  # online filtering of zero-signal groups (DAPO)
    # Start from these weights instead of model.hf_dir / the preset (SPEC 2.4: GRPO after SFT):
    # a training workdir (its newest checkpoint's params; the optimizer starts fresh), one
    # checkpoint directory, or an HF folder (mmjax.jobs.setup.model). "" = off.
    c.init_from = ""
    c.force_unlock = False  # take over a workdir lock left by a run on another host (mmjax.jobs.workdir_lock)

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # mmjax.models.qwen2_5_vl.PRESETS (BENCH.md tiny), used without hf_dir
    c.model.hf_dir = ""  # a Hugging Face Qwen2.5-VL folder, e.g. Qwen2.5-VL-7B-Instruct
    c.model.dtype = "float32"  # stored params: float32 master weights for training (mmjax)
    c.model.compute_dtype = ""  # "" = dtype; bfloat16 for accelerators (mmjax mixed precision)
    c.model.attention = "auto"  # mmjax.models.attention.IMPLEMENTATIONS; auto picks per backend
    c.model.remat = "none"  # mmjax.models.remat.REMAT_POLICIES for decoder layers
    c.model.vision_remat = "none"  # the same for ViT blocks

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1  # mesh axes (mmjax.sharding); -1 = all remaining devices
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.data = ml_collections.ConfigDict()
    # mmjax.jobs.setup.SOURCES: colour_choice | shapes_vqa (synthetic) | jsonl | parquet | image_folder |
    # video_folder | rgbd_folder
    c.data.source = "colour_choice"
    c.data.path = ""  # a JSONL / parquet file or a *_folder source's folder (rgbd_folder: index.jsonl or its folder)
    c.data.data_root = ""  # image paths are relative to this ("" = the file's folder)
    c.data.num_samples = 1024  # synthetic sources only
    c.data.image_size = (112, 112)  # synthetic sources only (height, width)
    c.data.seed = 0  # shuffle and task randomness (mmjax.data.pipeline)
    c.data.task = "qa"  # mmjax.jobs.setup.TASKS: qa | jigsaw_image | jigsaw_video | jigsaw_3d
    c.data.jigsaw_rows = 3  # SPEC 1.1 default 3x3
    c.data.jigsaw_cols = 3
    c.data.video_clips = 6  # SPEC 1.2 K clips (4 in the paper's ablations)
    c.data.video_trim = 0.10  # SPEC 1.2 trim per clip end: 0.10 released code (default), 0.05 paper
    c.data.video_sample_fps = 2.0  # SPEC 1.2 frames sampled per second inside a clip
    c.data.video_min_frames = 2  # SPEC 1.2 frames per clip clamped to [2, 12], even
    c.data.video_max_frames = 12  # SPEC 1.2
    c.data.video_min_seconds = 24.0  # SPEC 1.2 shorter videos are skipped
    c.data.video_frame_pixels = 128 * 28 * 28  # SPEC 1.2 each frame resized to about this many pixels
    c.data.jigsaw_points = 6  # SPEC 1.3 K depth points (mmjax.data.depth_jigsaw.DepthJigsaw)
    c.data.container = "answer"  # answer (paper) | boxed (released code): SPEC 1.4
    c.data.system_prompt = True  # SPEC 2.3 system prompt for QA rows
    c.data.prompt_layout = "image_first"  # QA rows: image_first | question_first (released CMAB script, SPEC 4)
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor min_pixels
    c.data.max_pixels = 28 * 28 * 1280  # Qwen2VLImageProcessor max_pixels
    c.data.min_vision_rows = 64  # smallest vision patch-row bucket (mmjax.processing.buckets)
    c.data.bucket_lengths = ()  # prompt-length buckets (pipeline and sampler); () = mmjax.processing.buckets' rule
    c.data.max_prompt_length = 0  # 0 = no limit; longer prompts are skipped, never truncated
    c.data.batch_size = 8  # prompts per micro-batch per process
    c.data.worker_count = 0  # grain worker processes
    c.data.strict = False  # raise on a bad row instead of counting and skipping it
    # Difficulty-aware selection (SPEC 2; mmjax.difficulty.selection.SelectionConfig has the full help).
    c.data.selection = ml_collections.ConfigDict()
    c.data.selection.score_file = ""  # the data's score file (mode=score's scores.parquet); "" = every row
    c.data.selection.subset = "full"  # full | random (n rows, seeded) | levels (rows at `levels`)
    c.data.selection.levels = "mid+hard"  # subset=levels: comma-separated easy,medium,hard,unsolved,mid+hard
    c.data.selection.method = "pism"  # pism (SPEC 2.1) | cmab (SPEC 2.2) | pism+cmab (see combine)
    c.data.selection.combine = "both"  # pism+cmab: both rate the row at a wanted level | either does
    c.data.selection.n = 0  # random rows to draw: subset=random needs n > 0; subset=levels: 0 = all of them
    c.data.selection.seed = 0  # seed of that draw
    c.data.selection.threshold_mode = "stored"  # stored (file's levels) | value | quantile (CMAB target mix)
    c.data.selection.pism_hard_max = 0.4  # value: PISM hard if lambda* <= 0.4 (SPEC 2.1)
    c.data.selection.pism_medium_max = 0.7  # value: PISM medium up to 0.7, easy above (SPEC 2.1 table)
    c.data.selection.cmab_definition = "paper"  # value / quantile: paper | code score column (SPEC 2.2)
    c.data.selection.cmab_easy_below = 0.1  # value: CMAB easy < 0.1 or > 1.9, hard in [0.4, 1.6] (SPEC 2.2)
    c.data.selection.cmab_hard_from = 0.4
    c.data.selection.cmab_hard_to = 1.6
    c.data.selection.cmab_easy_above = 1.9
    c.data.selection.cmab_center = 1.0  # quantile: rank solved rows by |score - 1| (mmjax.difficulty.cmab)
    c.data.selection.cmab_target_mix = ()  # quantile: (easy, medium, hard) shares, e.g. (2170, 3604, 2166) SPEC 2.2

    c.grpo = ml_collections.ConfigDict()
    c.grpo.num_generations = 8  # G (TRL default 8; SPEC 2.4)
    c.grpo.temperature = 1.0  # TRL default; SPEC 1.6 / 2.4
    c.grpo.top_p = 1.0  # TRL default
    c.grpo.top_k = 0  # 0 = off (TRL top_k=None)
    c.grpo.max_completion_length = 256  # TRL default 256
    c.grpo.beta = 0.0  # KL coefficient (TRL default 0.0)
    c.grpo.kl_estimator = "k3"  # TRL uses k3
    c.grpo.epsilon = 0.2  # TRL default
    c.grpo.epsilon_high = None  # None = epsilon (TRL)
    c.grpo.delta = None  # dual-clip c (SPEC 1.6 uses 3); None = off
    c.grpo.loss_type = "dapo"  # TRL default
    c.grpo.scale_rewards = "group"  # TRL default
    c.grpo.importance_sampling_level = "token"  # TRL default; "sequence" = GSPO
    c.grpo.num_iterations = 1  # mu (TRL default 1)
    c.grpo.mask_truncated_completions = False  # TRL default

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-6  # SPEC 1.6 (TRL default 1e-6)
    c.optim.schedule = "constant"  # constant | cosine | linear, after warmup_ratio / warmup_steps (HF)
    c.optim.warmup_ratio = 0.0  # HF TrainingArguments
    c.optim.weight_decay = 0.01  # SPEC 1.6
    c.optim.max_grad_norm = 1.0  # SPEC 1.6 / HF default
    c.optim.freeze_vision = False  # SPEC 2.4 freezes it for SFT only
    c.optim.freeze_merger = False

    c.rewards = ml_collections.ConfigDict()
    c.rewards.weights = ml_collections.ConfigDict({"accuracy": 1.0})  # SPEC 2.3: one accuracy reward
    c.rewards.options = ml_collections.ConfigDict()

    c.sample = ml_collections.ConfigDict()
    c.sample.allowed_tokens = ()  # restrict sampling to these one-token strings (() = everything)
    c.sample.allow_eos = True  # with allowed_tokens: EOS stays allowed

    c.sft = ml_collections.ConfigDict()  # mode "sft" only (mmjax.jobs.sft)
    c.sft.num_epochs = 1  # passes over the data (SPEC 2.4 SFT: 5); 0 = repeat until max_steps
    c.sft.answer_format = "plain"  # plain: the solution | think: <think></think><answer>X</answer> (SPEC 2.3 layout)
    c.sft.max_answer_length = 0  # answer tokens with EOS; 0 = no limit; longer answers are skipped, never truncated
    c.sft.bucket_lengths = ()  # answer-length buckets; () = mmjax.processing.buckets' rule
    return c


# ---- recipe arguments ------------------------------------------------------------------------

def parse_args(arg: str | None, allowed: Mapping[str, str], recipe: str) -> frozenset[str]:
    """`configs/x.py:code,tpu` -> frozenset({"code", "tpu"}).

    Names are comma-separated; spaces around them and empty items are ignored, so "" and None
    mean no argument. An unknown name raises ValueError naming the recipe and every allowed
    name with its help (`allowed`: name -> one-line help).
    """
    names = [item.strip() for item in (arg or "").split(",")]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        choices = "; ".join(f"{name}: {help_}" for name, help_ in allowed.items()) or "none"
        raise ValueError(f"{recipe}: unknown config argument(s) {unknown} in {arg!r}; allowed (comma-separated): "
                         f"{choices}")
    return frozenset(names)


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
# batch_size x gradient_accumulation_steps x processes = the paper's prompts per step.


def qwen7b_layout(c: ml_collections.ConfigDict, tpu: bool = False) -> ml_collections.ConfigDict:
    """Model, precision, remat and mesh settings for Qwen2.5-VL-7B on one 8-GPU host or a TPU slice.

    The weights come from `--config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct` (SPEC: both
    papers train Qwen2.5-VL-7B-Instruct); the tokenizer is read from the same folder.
    """
    c.tokenizer = "hf"  # the model's own tokenizer, from model.hf_dir (mmjax.jobs.setup.tokenizer)
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
        # A TPU slice: FSDP over all its chips (e.g. v5p-64 = 32 chips x 95 GB: 22.8 GB x 8 / 32
        # = 5.7 GB of training state per chip). Multi-host: one process per host, joined by
        # jax.distributed (mmjax.main); each reads its own data shard, and data.batch_size is
        # per process (tests/rl/test_multiprocess.py: 2 processes equal 1). Every process
        # gathers all processes' pixel rows for the replicated vision tower each micro-batch.
        c.mesh.fsdp = -1
    else:
        c.mesh.fsdp = 8  # one 8-GPU host: FSDP over its 8 devices (see the arithmetic above)
    return c


# ---- Visual Jigsaw: the GRPO, optimiser and reward settings its three tasks share -----------

JIGSAW_ARGS = {
    "code": "the released code's reward (JIGSAW_PRESETS['code']): \\boxed{} answers read as released, "
            "partial credit only for K > 4, -0.5 repetition penalty (SPEC 1.4, 1.5); default: the paper's",
    "tpu": "a TPU slice: FSDP over all its chips, batches per process sized for v5p-64 (see the recipe)",
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
