"""Online difficulty against offline selection (issue 23 section 4), as one sweep on a 2-core CPU.

    python -m mmjax.sweep --config configs/online.py:demo --workdir W
    python tools/online_report.py W          # W/online.md (table) and W/online.png (accuracy vs steps)

The task, model and rows are the paradigm demo's (configs/paradigms.py:demo): the `warmup` run
(configs/demo.py:quick, the tiny model partly competent on the colour task) starts every run;
its 256 graded colour-choice rows are scored by PISM (`score`, 10 ratios x 10 answers); every
arm trains STEPS GRPO steps of 8 prompts x 8 answers at the paradigm demo's learning rate,
from the warm-up model, on the same rows, with the same budget:

  static     every row, the pipeline's own order (data.online.policy=static: today's GRPO)
  band       every row; rows whose estimated pass rate leaves [0.25, 0.75] are retired and
             come back only as 10% re-tries (data.online.policy=band)
  weighted   every row, drawn with weight max(p(1-p), 0.01) (data.online.policy=weighted)
  midhard    the rows PISM put at medium or hard, static (the difficulty paper's offline
             selection, SPEC 2.4)

Each arm runs at SEEDS (config.seed: the rollouts' sampling keys; the rows and the warm-up model
stay). Every arm saves a checkpoint every EVAL_EVERY steps, and each is evaluated greedily on
the same 256 held-out graded rows (the paradigm demo's eval: `eval_<arm>_s<seed>_<step>`), as
is the warm-up model (`eval_base`). Nothing was tuned on the result: the arms, steps, rows and
rates were fixed before the grid ran (the policies' defaults are their config's).
"""

import importlib.util
import os

from mmjax import sweep
from mmjax.jobs import recipe

FILE = "configs/online.py"
ARGS = dict(demo=False, jigsaw=False, steps=0)
HELP = {"demo": "the grid on a 2-core CPU (see the docstring)",
        "jigsaw": "the adaptive jigsaw grid instead: fixed 2x2, fixed 3x3, adaptive (see the docstring)",
        "steps": "GRPO steps of every arm (0 = STEPS, JIGSAW_STEPS for the jigsaw grid)"}
STEPS = 64  # 512 prompts: two passes over the 256 rows, so the policies meet rows they have seen
EVAL_EVERY = 16
SEEDS = (0, 1, 2)
ARMS = {
    "static": {"data.online.policy": "static"},
    "band": {"data.online.policy": "band"},
    "weighted": {"data.online.policy": "weighted"},
    "midhard": {"data.online.policy": "static", "data.selection.subset": "levels",
                "data.selection.levels": "mid+hard", "data.selection.n": 0, "data.selection.method": "pism",
                "data.selection.threshold_mode": "stored", "data.selection.score_file": "{score}/scores.parquet"},
}


# ---- jigsaw: fixed 2x2, fixed 3x3 and adaptive (issue 23 section 4) ---------------------------------
# A random model never writes a parseable order (reward 0: no GRPO signal), so an SFT warm-up on 2x2
# puzzles teaches the bare answer ("3,1,4,2", digits and commas only) and some solving first; every arm
# starts from it. Rows: colour_choice photos (a shape drawn on a bundled photo) cut into tiles; held-out:
# the synthetic jigsaw benchmark (other crops of the bundled photos), greedy, solved = exact order.
# 168 px images, as the benchmark's: 2x2 and 3x3 tiles of 84 and 56 px, each resized to 56 x 56
# (4 vision tokens); a 37 px tile (112 px / 3) would be upscaled past max_pixels by the processor.
# The warm-up's length (measured 2026-12-07, 2-core CPU): the tiny model's loss sits on the digits'
# marginals (0.70 a token at 2x2: each digit uniform, no permutation) for ~450 steps, then falls (0.1-0.2
# by step 1100); 200 steps (the first attempt) left it writing no permutation at all. After 1500 steps
# it solves 16.4% of 128 held-out 2x2 puzzles greedily (chance: 1/24 = 4.2%). The measured grid (README,
# "Difficulty that moves with the model"): no arm improves held-out; adaptive oscillates 2x2 <-> 2x3.
JIGSAW_TASK = {
    "model.attention": "explicit", "data.task": "jigsaw_image", "data.source": "colour_choice",
    "data.num_samples": 1024, "data.seed": 11, "data.image_size": (168, 168), "data.min_pixels": 56 * 56,
    "data.max_pixels": 56 * 56, "data.min_vision_rows": 16, "data.system_prompt": False,
    "sample.allowed_tokens": tuple("123456789") + (",",), "sample.allow_eos": True,
}
JIGSAW_SFT_STEPS = 1500
GRPO_DATA_SEED = 12  # the warm-up's rows are data.seed 11
JIGSAW_STEPS = 128  # 1024 prompts: the adaptive arm's level may move more than once
JIGSAW_ARMS = {  # (grid it starts at, adaptive)
    "fixed2x2": ((2, 2), False), "fixed3x3": ((3, 3), False), "adaptive": ((2, 2), True),
}
JIGSAW_EVAL_GRIDS = ((2, 2), (3, 3))
BARE = {"jigsaw": {"think": False}, "jigsaw_exact": {"think": False}}  # the bare order is the whole answer


def _grid(rows: int, cols: int) -> dict:
    return {"data.jigsaw_rows": rows, "data.jigsaw_cols": cols}


def _jigsaw_eval(rows: int, cols: int, init_from: str) -> dict:
    return {**JIGSAW_TASK, "init_from": init_from, "eval.benchmarks.mmstar": "", "eval.benchmarks.jigsaw": "synthetic",
            "eval.jigsaw_rows": rows, "eval.jigsaw_cols": cols, "eval.jigsaw_think": False, "eval.synthetic_rows": 128,
            "eval.system_prompt": False, "eval.max_new_tokens": 18, "eval.batch_size": 32}


def _jigsaw_sweep(steps: int, lr: float) -> list:
    sft = {**JIGSAW_TASK, **_grid(2, 2), "max_steps": JIGSAW_SFT_STEPS, "sft.num_epochs": 0, "data.batch_size": 16,
           "save_steps": 500, "optim.learning_rate": 3e-3, "optim.freeze_vision": False, "optim.freeze_merger": False}
    runs = [sweep.Run("sft2x2", sft, config=_path("sft") + ":tiny")]
    for grid in JIGSAW_EVAL_GRIDS:
        runs.append(sweep.Run(f"eval_base_{grid[0]}x{grid[1]}", _jigsaw_eval(*grid, "{sft2x2}"),
                              config=_path("eval") + ":tiny"))
    eval_at = (steps // 2, steps)
    # GRPO draws other photos' puzzles (data.seed) than the warm-up memorised: its solve rate, which
    # moves the adaptive level, is then the model's, not its recall of the SFT rows.
    grpo = {**JIGSAW_TASK, "data.seed": GRPO_DATA_SEED, "init_from": "{sft2x2}", "rewards.options": BARE,
            "max_steps": steps,
            "save_steps": steps // 2, "save_total_limit": 3, "data.batch_size": 8,
            "grpo.num_generations": 8, "grpo.max_completion_length": 18, "optim.learning_rate": lr}
    for arm, (grid, adaptive) in JIGSAW_ARMS.items():
        for seed in SEEDS:
            name = f"{arm}_s{seed}"
            extra = ({"data.adaptive.enabled": True, "data.adaptive.max_level": 2, "data.adaptive.min_groups": 16}
                     if adaptive else {})
            runs.append(sweep.Run(name, {**grpo, **_grid(*grid), **extra, "seed": seed},
                                  config=_path("jigsaw_image") + ":tiny"))
            for step in eval_at:
                for g in JIGSAW_EVAL_GRIDS:
                    runs.append(sweep.Run(f"eval_{name}_{step}_{g[0]}x{g[1]}",
                                          _jigsaw_eval(*g, f"{{{name}}}/checkpoints/{step}"),
                                          config=_path("eval") + ":tiny"))
    return runs


def _paradigms():
    spec = importlib.util.spec_from_file_location("configs_paradigms", os.path.join(os.path.dirname(__file__),
                                                                                     "paradigms.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _path(name: str) -> str:
    return os.path.join(os.path.dirname(__file__), f"{name}.py")


def get_config(arg=None):
    """One arm's run outside the sweep: configs/paradigms.py:demo's GRPO row (the tiny model, every graded row)."""
    recipe.parse_args(arg, FILE, HELP, **ARGS)
    return _paradigms().get_config("demo")


def get_sweep(arg=None):
    args = recipe.parse_args(arg, FILE, HELP, **ARGS)
    if args.demo == args.jigsaw:
        raise ValueError(f"{FILE}: name one grid, {FILE}:demo or {FILE}:jigsaw; at full scale set "
                         "data.online.policy on configs/difficulty_grpo.py, data.adaptive.* on a jigsaw recipe")
    p = _paradigms()
    steps = args.steps or STEPS
    if args.jigsaw:
        return _jigsaw_sweep(args.steps or JIGSAW_STEPS, float(f"{1e-6 * p.DEMO_LR_SCALE:.6g}"))  # SPEC 1.6's 1e-6, the demo's scale
    grpo = {**p.DEMO_GRPO, "init_from": "{warmup}", "max_steps": steps, "save_steps": EVAL_EVERY,
            "save_total_limit": steps // EVAL_EVERY + 1,
            "optim.learning_rate": float(f"{p.GRPO_ONLY_LR * p.DEMO_LR_SCALE:.6g}")}
    evaluate = {**p.DEMO["eval"]}
    runs = [sweep.Run("warmup", config=_path("demo") + ":quick"),
            sweep.Run("score", {"init_from": "{warmup}", "score.methods": ("pism",), **p.DEMO["score"]},
                      config=_path("difficulty_score") + ":tiny"),
            sweep.Run("eval_base", {"init_from": "{warmup}", **evaluate}, config=_path("eval") + ":tiny")]
    for arm, overrides in ARMS.items():
        for seed in SEEDS:
            name = f"{arm}_s{seed}"
            runs.append(sweep.Run(name, {**grpo, **overrides, "seed": seed}, after=("score",),
                                  config=_path("difficulty_grpo") + ":tiny"))
            for step in range(EVAL_EVERY, steps + 1, EVAL_EVERY):
                checkpoint = f"{{{name}}}/checkpoints/{step}"
                runs.append(sweep.Run(f"eval_{name}_{step}", {**evaluate, "init_from": checkpoint},
                                      config=_path("eval") + ":tiny"))
    return runs
