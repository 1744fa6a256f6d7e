"""Difficulty-aware post-training (SPEC 2.4): GRPO only, on the medium + hard samples, Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/difficulty_grpo.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/train.jsonl \
        --config.data.selection.score_file=W_score/scores.parquet

The paper's best paradigm: no SFT, GRPO alone on the samples PISM (SPEC 2.1) or CMAB
(SPEC 2.2) rate medium or hard, with one accuracy reward (SPEC 2.3: the row's `task` column
picks the checker: math, choice, ocr, count, grounding; rows without one count as math), no
format reward, and the SPEC 2.3 system prompt asking for <think> reasoning and an <answer>.
data.path is a JSONL (default) or parquet (`--config.data.source=parquet`) file in the
difficulty work's layout (`images`, `messages` or `prompt`, `solution`, `task`; see
mmjax.data.rows).

Selection (mmjax.difficulty.selection): data.selection.score_file is the score file the
scoring job (mode=score) wrote for the same data.path; the job then trains on the rows PISM
rates medium or hard (SPEC 2.4's best), checks that the file scores every row of data.path
under the same ids, and logs the selected size and level mix (also in W/selection.json).
Other SPEC 2.4 paradigms are overrides: --config.data.selection.method=cmab (SPEC 2.2),
.levels=unsolved, .subset=full, .subset=random with .n=2679 (a random set of the same size),
.method=pism+cmab with .combine=both|either. Without a score file every row of data.path
is used (a warning says so), for a data.path that already holds only the rows to train on.

One epoch (SPEC 2.4) is max_steps = ceil(rows / 8); the default is the paper's PISM
medium + hard reasoning set (1,061 + 1,618 = 2,679 rows -> 335 steps): set
--config.max_steps for another file.

Arguments, comma-separated (`configs/difficulty_grpo.py:tpu`, `configs/difficulty_grpo.py:tiny,steps=20`):
  tpu   a TPU slice instead of one 8-GPU host.
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, synthetic choice questions (colour_choice), one device, 10 steps.
  steps=N  optimizer steps instead of the recipe's.
"""

from mmjax.jobs import recipe

ARGS = dict(tpu=False, tiny=False, steps=0, lora=False)
HELP = {"tpu": "a TPU slice (v5p-64): FSDP over 8 chips x tensor parallelism over the rest, one prompt per process "
               "(see the recipe)",
        "tiny": recipe.TINY_HELP, "lora": recipe.LORA_HELP, "steps": recipe.STEPS_HELP}


def get_config(arg: str | None = None):
    from mmjax.rl.grpo import GRPO_PRESETS  # pylint: disable=g-import-not-at-top

    args = recipe.parse_args(arg, "configs/difficulty_grpo.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "grpo"
    c.max_steps = 335  # SPEC 2.4 one epoch of 8 prompts a step over 2,679 rows (SPEC 2.1 counts)
    c.save_steps = 50  # mmjax: ~7 checkpoints over the epoch
    c.save_total_limit = 3

    c.data.source = "jsonl"  # jsonl | parquet (mmjax.jobs.build.SOURCES); data.path must be set
    c.data.task = "qa"  # SPEC 2.3 rows: question, images, solution, task
    c.data.container = "answer"  # SPEC 2.3: the checkers read the <answer> content
    c.data.system_prompt = True  # SPEC 2.3 system prompt: <think> reasoning, <answer> final answer
    # SPEC 2.4: max total length 2048 - max completion 1024; longer prompts are skipped, never truncated.
    c.data.max_prompt_length = 1024
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor defaults (the prompt budget above bounds the image)
    c.data.max_pixels = 28 * 28 * 1280
    # SPEC 2.4: GRPO alone on the medium + hard rows, by the PISM levels in the score file
    # (the paper's main result; CMAB is --config.data.selection.method=cmab). score_file must be set.
    c.data.selection.subset = "levels"
    c.data.selection.levels = "mid+hard"
    c.data.selection.method = "pism"
    c.data.selection.threshold_mode = "stored"  # the scoring job's levels (SPEC 2.1 thresholds)

    # SPEC 2.4 (GRPO_PRESETS["difficulty"]): group 8, temperature 1.0, beta (KL) 0.001,
    # completions up to 1024. Not stated there, so TRL's defaults: k3 KL estimator,
    # epsilon 0.2, no dual clip, loss_type "dapo", one update per rollout batch.
    for key, value in GRPO_PRESETS["difficulty"].items():
        c.grpo[key] = value
    c.optim.learning_rate = 5e-7  # SPEC 2.4 GRPO-only (1e-6 after SFT)
    # SPEC 2.4 names no GRPO schedule, decay or clipping: mmjax keeps SPEC 1.6's constant
    # AdamW, weight decay 0.01, clip 1.0 (recipe.base()).
    c.optim.schedule = "constant"
    c.optim.freeze_vision = False  # SPEC 2.4 freezes the ViT and merger for SFT only
    c.optim.freeze_merger = False

    # SPEC 2.3: one accuracy reward routed by the row's task, no format reward. Its container
    # is a reference to data.container, so the prompt and the checker cannot disagree.
    c.rewards.weights = {"accuracy": 1.0}
    c.rewards.options = {"accuracy": {"container": "answer"}}
    c.rewards.options.accuracy.container = c.data.get_ref("container")

    # ---- one 8-GPU host (8 x 80 GB), the numbers of mmjax.jobs.recipe's memory notes ----
    # SPEC 2.4: 8 prompts x 8 completions per step = 64 sequences of <= 2048 tokens.
    # Micro-batch = the whole step: 64 / 8 devices = 8 per device x 2048 x ~370 KB = 6.1 GB
    # (remat "full"), + the ViT's kept inputs (<= ~900 vision tokens a prompt under the
    # 1024-token budget: 8 x 3600 patch rows x 82 KB = 2.4 GB) + 22.8 GB training state +
    # the reference policy beta > 0 needs (the fp32 initial params: 33.2 GB / 8 = 4.1 GB)
    # = ~36 GB of 80. The headroom would allow remat "save_qkv_out" (~+7 GB) for speed.
    # mode=plan (README "Will it fit?"): state 16.6 GB + reference 4.15 + KV cache 0.53 as above;
    # its arithmetic peak 28.8 GB; XLA:CPU's 133 GB (the update's activations) is an upper bound.
    recipe.qwen7b_layout(c, tpu=args.tpu)
    c.data.batch_size = 8  # SPEC 2.4: 8 prompts per step, in one micro-batch
    c.gradient_accumulation_steps = 1  # SPEC 2.4: the step is the batch above
    if args.tpu:
        # v5p-64: 32 chips, 8 processes; 1 prompt a process = 8 prompts x 8 = 64 completions /
        # 32 chips = 2 a chip. On another slice keep batch_size x processes = 8 (a one-host
        # v5p-8: batch_size 8).
        c.data.batch_size = 1
        c.gradient_accumulation_steps = 1
    if args.lora:
        recipe.apply_lora(c)  # LoRA adapters on the frozen base (the settings it changes are named there)
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    if args.steps:
        c.max_steps = args.steps
    return c
