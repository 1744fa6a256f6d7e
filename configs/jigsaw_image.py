"""Visual Jigsaw, image task (SPEC 1.1, 1.4-1.6): GRPO on 3x3 tile puzzles, Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/jigsaw_image.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/images

Each image is cut into 3x3 tiles shown as 9 separate images in shuffled order; the model
answers, for the tiles in raster order, the number each was shown under. data.path is a
folder of images (`image_folder`, searched recursively); a JSONL / parquet file with one
image per row works too (`--config.data.source=jsonl`). Images with a side under 84 px are
skipped (SPEC 1.1).

Arguments, comma-separated (`configs/jigsaw_image.py:code,tpu`, `configs/jigsaw_image.py:tiny,steps=20`):
  code  the released code's reward instead of the paper's (SPEC 1.5 options,
        `mmjax.rewards.JIGSAW_PRESETS["code"]`): answers in \\boxed{} (prompt and checker),
        read as the released code reads them (format check and last-box depth count, parser="released"),
        partial credit only when K > 4 (so 3x3 keeps it, 2x2 loses it), and a -0.5 penalty
        for a 7+ word line repeated more than 3 times. Default: the paper's reward, answers
        in <answer></answer>.
  tpu   a TPU slice instead of one 8-GPU host (see the layout notes below).
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, 84 px synthetic shape images (shapes_vqa), one device, 10 steps.
  steps=N  optimizer steps instead of the recipe's.
"""

from mmjax.jobs import recipe

ARGS, HELP = recipe.JIGSAW_ARGS, recipe.JIGSAW_HELP


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/jigsaw_image.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "grpo"
    recipe.visual_jigsaw(c, reward_preset="code" if args.code else "paper")  # SPEC 1.5 / 1.6
    c.max_steps = 1000  # SPEC 1.6 (image)

    c.data.source = "image_folder"  # mmjax.jobs.build.SOURCES; data.path must be set
    c.data.task = "jigsaw_image"  # SPEC 1.1
    c.data.jigsaw_rows = 3  # SPEC 1.1 default 3x3 (2x2 in the paper's ablations)
    c.data.jigsaw_cols = 3
    c.data.system_prompt = False  # SPEC 1.1: the jigsaw prompt carries its own format instruction
    # Pixels per tile: mmjax's choice (the paper states none): at most 256 vision tokens a
    # tile, so a prompt holds <= 9 x 256 = 2304 vision tokens + ~150 text tokens (~2.5K);
    # a 640x480 photo gives 213x160 tiles, ~48 tokens each, well under the cap.
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor default (a 28 px tile is upsampled to 2x2 patches)
    c.data.max_pixels = 28 * 28 * 256
    c.data.max_prompt_length = 0  # bounded by the cap above; nothing is skipped for length

    # ---- one 8-GPU host (8 x 80 GB), the numbers of mmjax.jobs.recipe's memory notes ----
    # Per sequence: <= 2.5K prompt + 2048 completion = ~4.5K tokens x ~370 KB = 1.67 GB
    # (remat "full"). Micro-batch 8 prompts x 16 = 128 completions / 8 devices = 16 per
    # device -> 26.7 GB, + the ViT's kept inputs 8 prompts x 9216 patch rows x 82 KB = 6 GB
    # (counted whole on every device: the patch rows are not sharded) + 22.8 GB training
    # state = ~56 GB of 80. 16 prompts (53 GB of activations) would not fit.
    # The rollout KV cache: 128 x 4.5K x 57 KB / 8 = 4.1 GB per device.
    recipe.qwen7b_layout(c, tpu=args.tpu)
    c.data.batch_size = 8  # prompts per micro-batch (mmjax: from the arithmetic above)
    c.gradient_accumulation_steps = 32  # 8 x 32 = 256 prompts per step (SPEC 1.6 image)
    if args.tpu:
        # v5p-64: 32 chips x 95 GB, 8 hosts (processes); FSDP over the 32 chips: 5.7 GB of
        # state a chip. 4 prompts a process -> 32 prompts x 16 = 512 completions / 32 = 16 a
        # chip (26.7 GB), as on the GPU host. 4 x 8 processes x 8 = 256 prompts per step.
        # On another slice keep batch_size x processes x gradient_accumulation_steps = 256
        # (a one-host v5p-8: batch_size 4, gradient_accumulation_steps 64).
        c.data.batch_size = 4
        c.gradient_accumulation_steps = 8
    if args.lora:
        recipe.apply_lora(c)  # LoRA adapters on the frozen base (the settings it changes are named there)
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    if args.steps:
        c.max_steps = args.steps
    return c
