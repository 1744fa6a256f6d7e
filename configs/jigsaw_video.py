"""Visual Jigsaw, video task (SPEC 1.2, 1.4-1.6): GRPO on 6-clip temporal puzzles, Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/jigsaw_video.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/videos

Each video (at least 24 s) is split into 6 equal segments, each trimmed at both ends and
sampled at 2 fps (2..12 frames, even); the clips are shown as 6 separate videos in shuffled
order and the model answers, in chronological order, the number each clip was shown under.
data.path is a folder of videos (`video_folder`: .mp4 .mkv .webm .avi .mov .m4v, searched
recursively); a JSONL / parquet file with one video path per row works too.

Arguments, comma-separated (`configs/jigsaw_video.py:code,tpu`, `configs/jigsaw_video.py:tiny,steps=20`):
  code  the released code's reward instead of the paper's (SPEC 1.5 options,
        `mmjax.rewards.JIGSAW_PRESETS["code"]`): answers in \\boxed{} read as the released
        code reads them (parser="released"), partial credit only
        when K > 4 (6 clips keep it), -0.5 repetition penalty. Default: the paper's reward,
        answers in <answer></answer>.
  tpu   a TPU slice instead of one 8-GPU host.
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, 24 s synthetic moving-shape videos (synthetic_video), one device, 10 steps.
  steps=N  optimizer steps instead of the recipe's.
The clip trim is the released code's 10% per end (SPEC 1.2 default); the paper's 5% is
`--config.data.video_trim=0.05`.
"""

from mmjax.jobs import recipe

ARGS, HELP = recipe.JIGSAW_ARGS, recipe.JIGSAW_HELP


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/jigsaw_video.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "grpo"
    recipe.visual_jigsaw(c, reward_preset="code" if args.code else "paper")  # SPEC 1.5 / 1.6
    c.max_steps = 1000  # SPEC 1.6 (video)

    c.data.source = "video_folder"  # mmjax.jobs.build.SOURCES; data.path must be set
    c.data.task = "jigsaw_video"  # SPEC 1.2
    c.data.video_clips = 6  # SPEC 1.2 default K (4 in the paper's ablations)
    c.data.video_trim = 0.10  # SPEC 1.2: released code 10% per end (default); paper 5%
    c.data.video_sample_fps = 2.0  # SPEC 1.2
    c.data.video_min_frames = 2  # SPEC 1.2 clamp [2, 12]
    c.data.video_max_frames = 12
    c.data.video_min_seconds = 24.0  # SPEC 1.2
    c.data.video_frame_pixels = 128 * 28 * 28  # SPEC 1.2: ~128 vision tokens per 2-frame patch
    c.data.system_prompt = False  # the jigsaw prompt carries its own format instruction (SPEC 1.4)
    # The frames arrive resized to ~128*28*28 px; the processor's bounds must not resize them again.
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor default
    c.data.max_pixels = 28 * 28 * 1280  # Qwen2VLImageProcessor default, above 128*28*28
    c.data.max_prompt_length = 0  # bounded: at most 6 clips x 6 patches of 2 frames x 128 = 4608 vision tokens

    # ---- one 8-GPU host (8 x 80 GB), the numbers of mmjax.jobs.recipe's memory notes ----
    # Per sequence: <= 4608 vision + ~150 text + 2048 completion = ~6.8K tokens x ~370 KB =
    # 2.5 GB (remat "full"). Micro-batch 4 prompts x 16 = 64 completions / 8 devices = 8 per
    # device -> 20 GB, + the ViT's kept inputs 4 prompts x 18432 patch rows x 82 KB = 6 GB
    # (whole on every device) + 22.8 GB training state = ~49 GB of 80; 8 prompts (40 GB of
    # activations, ~75 GB in all) would leave no room for XLA's workspace.
    # The rollout KV cache: 64 x 6.8K x 57 KB / 8 = 3.1 GB per device.
    recipe.qwen7b_layout(c, tpu=args.tpu)
    # Prompts per micro-batch: one per device, as the sampler and the update split a micro-batch's
    # prompts over the 8 fsdp shards (4 did not split: mode=plan, "8 devices do not divide 4").
    c.data.batch_size = 8
    c.gradient_accumulation_steps = 16  # 8 x 16 = 128 prompts per step (SPEC 1.6 video)
    if args.tpu:
        # v5p-64: 32 chips x 95 GB, 8 processes; 2 prompts a process -> 16 prompts x 16 = 256
        # completions / 32 = 8 a chip (20 GB), as on the GPU host. 2 x 8 x 8 = 128 prompts per
        # step; on another slice keep batch_size x processes x gradient_accumulation_steps = 128.
        c.data.batch_size = 2
        c.gradient_accumulation_steps = 8
    if args.lora:
        recipe.apply_lora(c)  # LoRA adapters on the frozen base (the settings it changes are named there)
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    if args.steps:
        c.max_steps = args.steps
    return c
