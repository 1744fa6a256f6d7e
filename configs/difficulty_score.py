"""Difficulty scores (SPEC 2.1 PISM, SPEC 2.2 CMAB) of a training set, with Qwen2.5-VL-7B-Instruct.

    python -m mmjax.main --config configs/difficulty_score.py --workdir W \
        --config.model.hf_dir=/path/Qwen2.5-VL-7B-Instruct --config.data.path=/path/train.jsonl

Every row gets a PISM level (for each mask ratio 0.0 ... 0.9, K=10 answers at temperature
0.7, each under a fresh random mask; survival = pass@K; levels by lambda*, SPEC 2.1) and a
CMAB level (attention balance of one answer to the clean image, SPEC 2.2), both judged by
the one accuracy reward of SPEC 2.3 (the row's `task` column picks the checker). The
records go to W/scores.parquet, which configs/difficulty_grpo.py's data.selection reads;
W also gets score_summary.json and the plots (mmjax.jobs.score). A rerun in W resumes.

data.path is a JSONL (default) or parquet (`--config.data.source=parquet`) file in the
difficulty work's layout (`images`, `messages` or `prompt`, `solution`, `task`; see
mmjax.data.rows). Useful overrides: --config.score.methods='("pism",)' (PISM only),
--config.score.mask_mode=pixels (the paper's masks), --config.score.pism.medium_max=0.6
(the paper's text: 0.7 is easy), --config.score.write_jsonl=True.

Arguments, comma-separated (`configs/difficulty_score.py:code`, `configs/difficulty_score.py:tiny`):
  code  CMAB levels from the released code's definition (one layer, 20 of 28), its prompts
        built question first, as the released script does (SPEC 2.2, SPEC 4).
  tiny  this recipe at laptop-CPU scale in a couple of minutes (recipe.shrink_to_tiny): the
        tiny random model, synthetic choice questions (colour_choice), one device, 2 mask
        ratios x 2 attempts; CMAB by the `code` definition at the last layer (the tiny model
        has 2 layers, `paper` needs 3).
"""

from mmjax.data.masking import DEFAULT_RATIOS
from mmjax.jobs import recipe

ARGS = dict(code=False, tiny=False)
HELP = {"code": "CMAB levels by the released code's definition (layer 20), prompts question first (SPEC 2.2, 4)",
        "tiny": recipe.TINY_HELP}


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/difficulty_score.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "score"
    c.plan.job = "score"  # --config.mode=plan plans this job (mmjax.jobs.plan)

    c.data.source = "jsonl"  # jsonl | parquet (mmjax.jobs.build.SOURCES); data.path must be set
    c.data.task = "qa"  # SPEC 2.3 rows: question, images, solution, task
    c.data.container = "answer"  # SPEC 2.3: the checkers read the <answer> content
    c.data.system_prompt = True  # SPEC 2.3 system prompt: <think> reasoning, <answer> final answer
    # SPEC 2.4: max total length 2048 - max completion 1024: the prompts GRPO will see (longer: skipped).
    c.data.max_prompt_length = 1024
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor defaults, as configs/difficulty_grpo.py
    c.data.max_pixels = 28 * 28 * 1280
    c.data.batch_size = 32  # mmjax: samples per scored batch (one score-file part each; a crash loses one)
    c.rewards.weights = {"accuracy": 1.0}  # SPEC 2.3: one accuracy reward, no format reward
    c.rewards.options = {"accuracy": {"container": "answer"}}
    c.rewards.options.accuracy.container = c.data.get_ref("container")  # the prompt's container is the checker's

    # The score section at its dataclasses' defaults (ScoreConfig, PismLevels, CmabConfig; recipe.score_schema);
    # the lines below pin the papers' values and set what this scale needs.
    s = c.score = recipe.mode_section("score", "score")
    s.methods = ("pism", "cmab")  # mmjax.difficulty.scoring.METHODS: pism (SPEC 2.1) and / or cmab (SPEC 2.2)
    s.ratios = DEFAULT_RATIOS  # SPEC 2.1: 0.0, 0.1, ..., 0.9 (must start at 0)
    s.attempts = 10  # SPEC 2.1: K answers per ratio, survival = pass@K
    s.temperature = 0.7  # SPEC 2.1 PISM sampling temperature
    s.top_p = 1.0  # mmjax: SPEC 2.1 names no nucleus cut (1 = off)
    s.top_k = 0  # mmjax: SPEC 2.1 names no top-k (0 = off)
    s.max_new_tokens = 1024  # SPEC 2.4 max completion 1024 (the answers GRPO would sample)
    s.mask_mode = "rectangle"  # SPEC 2.1: rectangle (released code, default) | pixels (paper) | patches (mmjax)
    s.patch_size = 28  # SPEC 2.1 patches mode: 28 px = one merged vision token
    # SPEC 2.1 protocol: a fresh mask for every attempt. True: one mask per ratio and K answers
    # sharing its prefill (faster, NOT the paper's protocol).
    s.shared_mask = False
    s.stop_at_first_failure = False  # mmjax option, off: SPEC 2.1 survival need not be monotone, keep the curve
    s.sampler_batch = 256  # mmjax: completions per PISM sampler call (see the memory note below)
    s.cmab_batch = 32  # mmjax: prompts per CMAB call (one answer each, masses captured): one call a batch
    # mmjax: greedy CMAB answers (one per sample: its most likely one, not a draw). Qwen2.5-VL-Instruct's
    # generation_config samples with top_k=1, i.e. greedily, which is what the released script's generate gets.
    s.cmab_temperature = 0.0
    s.correct_threshold = 0.5  # SPEC 2.3: accuracy rewards are 0/1; grounding's area-weighted IoU counts from 0.5
    s.host_threads = 8  # mmjax: threads resizing masked images while the GPU samples

    s.pism.hard_max = 0.4  # SPEC 2.1: hard if lambda* <= 0.4
    s.pism.medium_max = 0.7  # SPEC 2.1: medium up to 0.7 (the paper's table); 0.6 = its text (0.7 easy)

    s.cmab.definition = "paper"  # SPEC 2.2: paper (all layers but the first and last) | code (released code)
    s.cmab.layer = 20  # SPEC 2.2 `code`: 0-based layer 20 of the 7B's 28 (both scores are recorded)
    s.cmab.easy_below = 0.1  # SPEC 2.2: easy < 0.1 or > 1.9; medium in [0.1, 0.4) or (1.6, 1.9]; hard in [0.4, 1.6]
    s.cmab.hard_from = 0.4
    s.cmab.hard_to = 1.6
    s.cmab.easy_above = 1.9
    s.cmab.mode = "fixed"  # SPEC 2.2: fixed thresholds | quantile (levels reproducing target_mix)
    s.cmab.center = 1.0  # SPEC 2.2 quantile mode: solved samples ranked by |score - 1| (balance)
    # The prompt layout follows the CMAB definition (mmjax.difficulty.cmab.DEFAULT_LAYOUT): the
    # data's own order (image, then question) for `paper`.
    c.data.prompt_layout = "image_first"
    if args.code:
        s.cmab.definition = "code"  # SPEC 2.2 released code's definition, at s.cmab.layer
        # SPEC 4: the released script puts the question before the image, so its "text before the
        # first image" is the question; scores comparable with it need the same layout.
        c.data.prompt_layout = "question_first"

    # ---- Qwen2.5-VL-7B on one 8-GPU host (8 x 80 GB) ----
    # Inference only: no optimizer state or gradients, so the bf16 weights (16.6 GB, mmjax.jobs.recipe's
    # arithmetic) fit every GPU and the rows are split over 8 data-parallel replicas (no FSDP
    # all-gathers at each decode step). A batch of 32 samples makes one clean call (32 prompts x K=10
    # answers), 32 x 9 x 10 = 2880 masked prompts in 12 calls of 256 (the last padded: 6% waste) and
    # one CMAB call of 32. KV cache: 57 KB a token x (prompt <= 1024 + 1024 new) x 320 rows / 8 GPUs
    # = 4.7 GB a GPU; a call's pixels, <= 1280 merged tokens x 4 patch rows x 1176 x 4 B = 24 MB a
    # prompt, 0.8 GB a GPU; CMAB's masses, 28 layers x 28 heads x 3 x 4 B x 1024 tokens = 9.6 MB a row.
    recipe.qwen7b_layout(c)
    c.model.dtype = "bfloat16"  # mmjax: scoring trains nothing; fp32 master weights would only cost memory
    c.model.remat = "none"  # mmjax: remat saves activations for a backward pass, which scoring never runs
    c.model.vision_remat = "none"
    c.mesh.data = 8  # mmjax: 8 replicas, each sampling 1/8 of a call's rows
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    if args.tiny:
        recipe.shrink_to_tiny(c)  # all of the above at laptop scale: tiny model, synthetic data, 1 device
    return c
