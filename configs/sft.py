"""Difficulty-aware post-training (SPEC 2.4), the SFT half of SFT(X) then GRPO(Y): Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/sft.py --workdir W_SFT \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/train.jsonl \
        --config.data.selection.score_file=W_SCORE/scores.parquet \
        --config.data.selection.subset=levels --config.data.selection.levels=medium
    python -m mmjax.main --config configs/difficulty_grpo.py --workdir W_GRPO \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.init_from=W_SFT \
        --config.optim.learning_rate=1e-6 --config.data.path=/path/train.jsonl \
        --config.data.selection.score_file=W_SCORE/scores.parquet --config.data.selection.levels=hard

X and Y are levels of one score file (configs/difficulty_score.py writes W_SCORE), picked
by `config.data.selection` (mmjax.difficulty.selection; `subset=random` with `n` = the
size of X gives SPEC 2.4's random-of-the-same-size control); both jobs write the chosen
rows and their level mix to their workdir's selection.json.

Cross-entropy on the answer tokens only (prompt and image tokens carry no loss), the
answer being the row's `solution` followed by <|im_end|>, after the same prompt GRPO sees
(SPEC 2.3 system prompt, the question and its images). SPEC 2.4: learning rate 1e-6 with a
cosine schedule and 10% warmup, 5 epochs, the vision tower and the projector (merger)
frozen. The run lasts the 5 passes over data.path (max_steps 0 = as many steps as they
take), and GRPO then starts from its newest checkpoint (`config.init_from`; SPEC 2.4: GRPO
at 1e-6 after SFT, so override the GRPO recipe's 5e-7 as above). data.path is a JSONL
(default) or parquet file in the difficulty work's layout, as for configs/difficulty_grpo.py.

Not stated by SPEC 2.4, so mmjax's choices: the answer is the bare solution
(`sft.answer_format="think"` writes `<think></think><answer>X</answer>` instead), 8 prompts
a step like the GRPO recipe, AdamW with weight decay 0.01 and clipping 1.0 as elsewhere.

Arguments, comma-separated (`configs/sft.py:tpu`, `configs/sft.py:tiny,steps=20`):
  tpu   a TPU slice instead of one 8-GPU host.
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, synthetic choice questions (colour_choice), one device, one pass.
  steps=N  at most N optimizer steps (max_steps) instead of the sft.num_epochs passes.
"""

from mmjax.jobs import recipe

ARGS = dict(tpu=False, tiny=False, steps=0, lora=False)
HELP = {"tpu": "a TPU slice (v5p-64): FSDP over 8 chips x tensor parallelism over the rest, one prompt per process "
               "(see the recipe)",
        "tiny": recipe.TINY_HELP, "lora": recipe.LORA_HELP, "steps": "at most this many optimizer steps (max_steps); 0 = the epochs' count"}


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/sft.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "sft"
    c.plan.job = "sft"  # --config.mode=plan plans this job (mmjax.jobs.plan)
    c.max_steps = 0  # SPEC 2.4: the run is sft.num_epochs passes, however many steps they take
    c.save_steps = 50  # mmjax: a checkpoint every 50 steps, and at the end
    c.save_total_limit = 3  # mmjax: GRPO's init_from reads only the newest

    c.sft.num_epochs = 5  # SPEC 2.4 SFT: 5 epochs
    c.sft.answer_format = "plain"  # mmjax (SPEC 2.4 does not say): the solution as the row gives it
    c.sft.max_answer_length = 1024  # SPEC 2.4 max completion 1024; longer answers are skipped, never truncated

    c.data.source = "jsonl"  # jsonl | parquet (mmjax.jobs.build.SOURCES); data.path must be set
    c.data.task = "qa"  # SPEC 2.3 rows: question, images, solution, task
    c.data.container = "answer"  # SPEC 2.3: the <answer> container GRPO's checker reads (answer_format think)
    c.data.system_prompt = True  # SPEC 2.3 system prompt, the same prompt GRPO trains on afterwards
    c.data.max_prompt_length = 1024  # SPEC 2.4 max total 2048 - max completion 1024; longer prompts skipped
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor defaults (the prompt budget above bounds the image)
    c.data.max_pixels = 28 * 28 * 1280

    c.optim.learning_rate = 1e-6  # SPEC 2.4 SFT
    c.optim.schedule = "cosine"  # SPEC 2.4 SFT
    c.optim.warmup_ratio = 0.1  # SPEC 2.4 SFT
    c.optim.weight_decay = 0.01  # mmjax (SPEC 2.4 does not say): SPEC 1.6's AdamW, as recipe.base()
    c.optim.max_grad_norm = 1.0  # mmjax (SPEC 2.4 does not say): HF's default clip
    c.optim.freeze_vision = True  # SPEC 2.4 SFT: the vision tower is frozen
    c.optim.freeze_merger = True  # SPEC 2.4 SFT: the projector (merger) is frozen too

    # ---- one 8-GPU host (8 x 80 GB), the numbers of mmjax.jobs.recipe's memory notes ----
    # 8 sequences of <= 1024 prompt + a short answer, one a device: ~0.4 GB of activations with
    # remat "full" + 22.8 GB of training state (less: the frozen ViT and merger, 0.68e9 params,
    # keep no Adam moments, -0.7 GB a device). No reference model, no rollout KV cache.
    recipe.qwen7b_layout(c, tpu=args.tpu)
    c.data.batch_size = 8  # mmjax (SPEC 2.4 does not say): 8 prompts a step, as the GRPO recipe
    c.gradient_accumulation_steps = 1
    if args.tpu:
        # v5p-64: 8 processes x 1 prompt = 8 prompts a step (keep batch_size x processes = 8).
        c.data.batch_size = 1
    if args.lora:
        recipe.apply_lora(c)  # LoRA adapters on the frozen base (the settings it changes are named there)
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    if args.steps:
        c.max_steps = args.steps
    return c
