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
ARGS = dict(demo=False, steps=0)
HELP = {"demo": "the grid on a 2-core CPU (see the docstring)", "steps": "GRPO steps of every arm (0 = STEPS)"}
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
    if not args.demo:
        raise ValueError(f"{FILE}: only the demo grid exists ({FILE}:demo); at full scale set data.online.policy "
                         "on configs/difficulty_grpo.py")
    p = _paradigms()
    steps = args.steps or STEPS
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
                runs.append(sweep.Run(f"eval_{name}_{step}", {**evaluate, "init_from": f"{{{name}}}/checkpoints/{step}"},
                                      config=_path("eval") + ":tiny"))
    return runs
