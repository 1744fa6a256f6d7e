"""Defaults every recipe (configs/*.py) starts from; a recipe overrides what it changes and says why.

Each field has a one-line comment with its source (TRL / HF TrainingArguments / SPEC.md /
mmjax). The GRPO and optimiser fields mirror mmjax.rl.grpo.GRPOConfig and
mmjax.train.optim.OptimizerConfig, whose help strings cite their sources in full.
"""

import ml_collections


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "grpo"  # which job mmjax.main runs: grpo | demo
    c.seed = 0  # params init, data order, sampling keys (mmjax)
    c.tokenizer = "tiny"  # tiny (tests, demo) | qwen2 (the real BPE, offline) | hf (from model.hf_dir)

    c.max_steps = 100  # optimizer steps (TRL max_steps)
    c.save_steps = 50  # checkpoint every N steps (TRL save_steps)
    c.logging_steps = 1  # metrics every N steps (TRL logging_steps)
    c.save_total_limit = 3  # checkpoints kept (TRL save_total_limit)
    c.gradient_accumulation_steps = 1  # micro-batches per step (TRL)
    c.filter_zero_std_groups = False  # online filtering of zero-signal groups (DAPO)

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
    c.data.source = "colour_choice"  # colour_choice | shapes_vqa (synthetic) | jsonl | parquet
    c.data.path = ""  # the JSONL / parquet file
    c.data.data_root = ""  # image paths are relative to this ("" = the file's folder)
    c.data.num_samples = 1024  # synthetic sources only
    c.data.image_size = (112, 112)  # synthetic sources only (height, width)
    c.data.seed = 0  # shuffle and task randomness (mmjax.data.pipeline)
    c.data.task = "qa"  # qa | jigsaw_image
    c.data.jigsaw_rows = 3  # SPEC 1.1 default 3x3
    c.data.jigsaw_cols = 3
    c.data.container = "answer"  # answer (paper) | boxed (released code): SPEC 1.4
    c.data.system_prompt = True  # SPEC 2.3 system prompt for QA rows
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor min_pixels
    c.data.max_pixels = 28 * 28 * 1280  # Qwen2VLImageProcessor max_pixels
    c.data.min_vision_rows = 64  # smallest vision patch-row bucket (mmjax.processing.buckets)
    c.data.bucket_lengths = ()  # prompt-length buckets; () = mmjax's 2^k / 3*2^(k-1) rule
    c.data.max_prompt_length = 0  # 0 = no limit; longer prompts are skipped, never truncated
    c.data.batch_size = 8  # prompts per micro-batch per process
    c.data.worker_count = 0  # grain worker processes
    c.data.strict = False  # raise on a bad row instead of counting and skipping it

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
    return c
