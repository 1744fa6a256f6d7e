"""Visual Jigsaw, 3D task (SPEC 1.3, 1.4-1.6): GRPO on depth ordering of 6 points, Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/jigsaw_3d.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/rgbd

On each RGB-D frame 6 points are picked (depth in [0.1, 10] m, >= 40 px apart, depth gaps
> 0.2 m) and drawn as numbered red markers in shuffled order; the model answers the marker
numbers from nearest to farthest. data.path is an RGB-D index (`rgbd_folder`): a JSONL of
{"image": rgb path, "depth": depth path} rows, or the folder holding it as index.jsonl
(the layout mmjax.data.synthetic.write_rgbd_scenes writes). Depth files are 16-bit PNGs in
millimetres or .npy arrays in metres, at the RGB resolution.

Arguments, comma-separated (`configs/jigsaw_3d.py:code,tpu`, `configs/jigsaw_3d.py:tiny,steps=20`):
  code  the released code's reward instead of the paper's (SPEC 1.5 options,
        `mmjax.rewards.JIGSAW_PRESETS["code"]`): answers in \\boxed{} read as the released
        code reads them (parser="released"), partial credit only
        when K > 4 (6 points keep it), -0.5 repetition penalty. Default: the paper's reward,
        answers in <answer></answer>.
  tpu   a TPU slice instead of one 8-GPU host.
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, synthetic RGB-D scenes (synthetic_rgbd), one device, 10 steps.
  steps=N  optimizer steps instead of the recipe's.
"""

from mmjax.jobs import recipe

ARGS, HELP = recipe.JIGSAW_ARGS, recipe.JIGSAW_HELP


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/jigsaw_3d.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "grpo"
    recipe.visual_jigsaw(c, reward_preset="code" if args.code else "paper")  # SPEC 1.5 / 1.6
    c.max_steps = 800  # SPEC 1.6 (3D)

    c.data.source = "rgbd_folder"  # the only source with depth maps (mmjax.jobs.build.TASK_SOURCES)
    c.data.task = "jigsaw_3d"  # SPEC 1.3
    c.data.jigsaw_points = 6  # SPEC 1.3 default K
    c.data.system_prompt = False  # the jigsaw prompt carries its own format instruction (SPEC 1.4)
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor defaults: one frame, at most 1280 vision tokens
    c.data.max_pixels = 28 * 28 * 1280
    c.data.max_prompt_length = 0  # bounded: <= 1280 vision + ~150 text tokens

    # ---- one 8-GPU host (8 x 80 GB), the numbers of mmjax.jobs.recipe's memory notes ----
    # Per sequence: <= 1.45K prompt + 2048 completion = ~3.5K tokens x ~370 KB = 1.3 GB
    # (remat "full"). Micro-batch 8 prompts x 16 = 128 completions / 8 devices = 16 per
    # device -> 20.7 GB, + the ViT's kept inputs 8 prompts x 5120 patch rows x 82 KB =
    # 3.4 GB (whole on every device) + 22.8 GB training state = ~47 GB of 80; 16 prompts
    # (41 GB of activations, ~71 GB in all) would leave too little for XLA's workspace.
    # The rollout KV cache: 128 x 3.5K x 57 KB / 8 = 3.2 GB per device.
    recipe.qwen7b_layout(c, tpu=args.tpu)
    c.data.batch_size = 8  # prompts per micro-batch (mmjax: from the arithmetic above)
    c.gradient_accumulation_steps = 16  # 8 x 16 = 128 prompts per step (SPEC 1.6 3D)
    if args.tpu:
        # v5p-64: 32 chips x 95 GB, 8 processes; 4 prompts a process -> 32 prompts x 16 = 512
        # completions / 32 = 16 a chip (20.7 GB), as on the GPU host. 4 x 8 x 4 = 128 prompts
        # per step; on another slice keep batch_size x processes x gradient_accumulation_steps = 128.
        c.data.batch_size = 4
        c.gradient_accumulation_steps = 4
    if args.lora:
        recipe.apply_lora(c)  # LoRA adapters on the frozen base (the settings it changes are named there)
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    if args.steps:
        c.max_steps = args.steps
    return c
