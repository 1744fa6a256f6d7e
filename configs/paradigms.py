"""The difficulty paper's paradigm grid (SPEC 2.4) as one sweep: score once, train 12 ways, evaluate all.

    python -m mmjax.sweep --config configs/paradigms.py:pism,vrt,model=/m/Qwen2.5-VL-7B-Instruct,\
data=/d/train.jsonl,mathvista=/b/mathvista.jsonl,mmstar=/b/mmstar.jsonl --workdir W [--dry_run]
    python -m mmjax.sweep --config configs/paradigms.py:pism,vrt,tiny --workdir W    # on a CPU
    python -m mmjax.sweep --config configs/paradigms.py:demo --workdir W    # the whole grid, 2-core CPU

The grid (30 runs, each an `mmjax.main` job in W/runs/<name>; `->` = waits for):
  score                       configs/difficulty_score.py: the levels of every row, by `pism` or
                              `cmab` only (W/runs/score/scores.parquet), shared by every row
  GRPO only, lr 5e-7 (SPEC 2.4), configs/difficulty_grpo.py, each -> score:
    grpo_full                 every row
    grpo_unsolved             the unsolved rows
    grpo_random               a seeded random set of |medium + hard| rows (as many as scored)
    grpo_midhard              the medium + hard rows (the paper's best)
  SFT stages, configs/sft.py (its SPEC 2.4 settings), each -> score, one run per subset:
    sft_mid, sft_hard         the medium rows, the hard rows
    sft_rand_m, sft_rand_h    seeded random sets of |medium| and |hard| rows
  SFT(X) then GRPO(Y), lr 1e-6 (SPEC 2.4), init_from the SFT run, each -> sft_X (-> score):
    sft_mid__grpo_mid         sft_mid__grpo_hard        sft_hard__grpo_mid        sft_hard__grpo_hard
    sft_rand_m__grpo_rand_m   sft_rand_m__grpo_rand_h   sft_rand_h__grpo_rand_m   sft_rand_h__grpo_rand_h
  Evaluations, configs/eval.py, all on the same benchmark files:
    eval_base                 the base model (model=), waits for nothing
    eval_<row>                each of the 12 rows above, init_from that row -> <row>

Arguments, comma-separated (recipe.parse_args; a path may hold no comma):
  pism | cmab    whose levels select the subsets (SPEC 2.1 | SPEC 2.2): `method=pism` | `method=cmab`
  vrt | vpt      the training set whose SPEC 2.1 / 2.2 level counts set the one-epoch step
                 counts: reasoning (27,133 rows) | perception (20,633 rows) (`sizes=vrt` |
                 `sizes=vpt`). The four tables are {pism, cmab} x {vrt, vpt}. Subsets are what
                 the scoring run finds: a level subset its rows at those levels, a random
                 subset as many rows as those levels hold (data.selection.size_of).
  model=DIR      the Qwen2.5-VL-7B-Instruct folder every run starts from (and its tokenizer)
  data=FILE      the training set scored and trained on (.jsonl, or .parquet read as parquet)
  mathvista=FILE, ocrbench=FILE, mmstar=FILE, mmmu=FILE, hallusionbench=FILE   benchmark files
                 (configs/eval.py formats); at least one. SPEC 2.4's MMVet has no reader in mmjax
                 (its score needs a GPT-4 grader).
  tiny           every run is its recipe's `:tiny` variant (recipe.shrink_to_tiny: the tiny
                 random model, 32 synthetic rows, eval's synthetic mmstar and jigsaw) and takes
                 no files. It exercises the grid (order, init_from, every job starting), not the
                 selection: tiny runs train on every synthetic row (shrink_to_tiny drops the
                 score file; a random model's levels are noise anyway), so `score` only orders them.
  steps=N        every GRPO and SFT run stops after N optimizer steps (a quick look at the grid)
  demo           the whole grid on a 2-core CPU in under 15 min (9:15-9:22 measured; no files;
                 `pism` by default, `cmab` allowed), on a task where difficulty is real: a `warmup` run first
                 (configs/demo.py:quick, the tiny model partly competent on the colour task),
                 from which `score`, `eval_base`, the GRPO-only rows and the SFT stages start;
                 DEMO_ROWS graded colour-choice rows (shape size, contrast and distractors vary)
                 scored by PISM's 10 ratios x 10 answers and drawn from by every subset; every
                 GRPO and SFT run DEMO_STEPS steps of 8 prompts (x 8 answers), SPEC 2.4's
                 learning rates x DEMO_LR_SCALE; bare-letter answers (A-D, one token) as in the
                 demo; every eval on the same DEMO_EVAL_ROWS held-out graded rows (the `qa`
                 synthetic benchmark, results broken down by each factor). 31 runs.

`get_config` (python -m mmjax.main --config configs/paradigms.py:...) is the grid's headline
row, GRPO only on medium + hard: configs/difficulty_grpo.py with the method, sizes and files
above; give it --config.data.selection.score_file. With demo it is the demo grid's row on the
tiny model (no warm-up, no score file: every graded row); `demo` implies `tiny`'s scale.
"""

import importlib.util
import math
import os

from mmjax import sweep
from mmjax.jobs import recipe

FILE = "configs/paradigms.py"
ARGS = dict(method="", sizes="", tiny=False, demo=False, steps=0, model="", data="", mathvista="", ocrbench="",
            mmstar="", mmmu="", hallusionbench="")
HELP = {"method": "pism | cmab: whose levels select (bare `pism` / `cmab` say the same)",
        "sizes": "vrt | vpt: the reasoning | perception set's SPEC 2.1 / 2.2 level counts (bare `vrt` / `vpt`)",
        "tiny": recipe.TINY_HELP + "; every run of the grid",
        "demo": "the grid on a 2-core CPU in under 15 min, on a task where difficulty is real (see the docstring)",
        "steps": "optimizer steps of every GRPO and SFT run (max_steps); 0 = the recipes' (GRPO: one epoch)",
        "model": "the Qwen2.5-VL-7B-Instruct folder (model.hf_dir of every run)",
        "data": "the training set, .jsonl or .parquet (data.path of the score, SFT and GRPO runs)",
        "mathvista": "MathVista benchmark file (eval.benchmarks.mathvista)",
        "ocrbench": "OCRBench benchmark file (eval.benchmarks.ocrbench)",
        "mmstar": "MMStar benchmark file (eval.benchmarks.mmstar)",
        "mmmu": "MMMU validation benchmark file (eval.benchmarks.mmmu)",
        "hallusionbench": "HallusionBench benchmark file (eval.benchmarks.hallusionbench)"}
WORDS = {"pism": "method=pism", "cmab": "method=cmab", "vrt": "sizes=vrt", "vpt": "sizes=vpt"}
METHODS = ("pism", "cmab")
SIZES = ("vrt", "vpt")
BENCHMARKS = ("mathvista", "ocrbench", "mmstar", "mmmu", "hallusionbench")  # SPEC 2.4's that mmjax.eval reads

# Level counts of the paper's 47.7K-sample training set, by method and part (SPEC 2.1 for PISM,
# SPEC 2.2 for CMAB). VRT is its reasoning part (27,133 rows), VPT its perception part (20,633);
# SPEC does not spell out the names: this is our reading of the two parts the counts give.
COUNTS = {
    ("pism", "vrt"): dict(easy=5048, medium=1061, hard=1618, unsolved=19406),  # SPEC 2.1 reasoning
    ("pism", "vpt"): dict(easy=7827, medium=4872, hard=1454, unsolved=6480),   # SPEC 2.1 perception
    ("cmab", "vrt"): dict(easy=2170, medium=3604, hard=2166, unsolved=19193),  # SPEC 2.2 reasoning
    ("cmab", "vpt"): dict(easy=6753, medium=6029, hard=1001, unsolved=6850),   # SPEC 2.2 perception
}
PROMPTS_PER_STEP = 8  # SPEC 2.4: 8 prompts x 8 completions per step, 1 epoch -> ceil(rows / 8) steps

GRPO_ONLY_LR = 5e-7  # SPEC 2.4: GRPO lr 5e-7 ...
GRPO_AFTER_SFT_LR = 1e-6  # SPEC 2.4: ... (1e-6 after SFT)

# The subsets, by name: (data.selection.subset, its levels, the levels it is sized by).
# Level subsets take every row the score file puts at their levels (their size is what the
# scoring finds; the paper's counts of the levels set only the one-epoch step count).
# Random subsets (SPEC 2.4's "random subset" and "random-of-same-size") are drawn by
# data.selection (numpy default_rng(seed).choice without replacement) from EVERY scored row of
# data.path, whatever its level, unsolved included, as many as the score file puts at the
# levels they stand in for (data.selection.size_of). Our choices, as SPEC 2.4 does not say:
# `random` (GRPO only) is the size of medium + hard, so it is the control of the paper's best
# row; each random subset has its own seed, so rand_h is not a prefix of rand_m (mid and hard
# are disjoint; two draws overlap only by chance, ~|m| x |h| / rows rows); a random subset is
# the same draw in every run that uses it.
SUBSETS = {
    "full": ("full", "", ("easy", "medium", "hard", "unsolved")),
    "unsolved": ("levels", "unsolved", ("unsolved",)),
    "random": ("random", "", ("medium", "hard")),
    "midhard": ("levels", "mid+hard", ("medium", "hard")),
    "mid": ("levels", "medium", ("medium",)),
    "hard": ("levels", "hard", ("hard",)),
    "rand_m": ("random", "", ("medium",)),
    "rand_h": ("random", "", ("hard",)),
}
SEEDS = {"random": 0, "rand_m": 1, "rand_h": 2}  # data.selection.seed of each random subset (mmjax)

# The paper's 12 rows (Tables 1-4). GRPO only: SPEC 2.4's full set, unsolved, random, medium + hard.
GRPO_ONLY = ("full", "unsolved", "random", "midhard")
# SFT(X) then GRPO(Y) "for X, Y in {medium, hard, random-of-same-size}" (SPEC 2.4). Our reading
# of its eight rows: every (X, Y) of {mid, hard}, and the same four with each level set replaced
# by its random set of the same size, so every level row has a size-matched random control.
SFT_THEN_GRPO = (("mid", "mid"), ("mid", "hard"), ("hard", "mid"), ("hard", "hard"),
                 ("rand_m", "rand_m"), ("rand_m", "rand_h"), ("rand_h", "rand_m"), ("rand_h", "rand_h"))
SCORE_FILE = "{score}/scores.parquet"  # what configs/difficulty_score.py writes in its workdir

# ---- demo: the grid on a 2-core CPU (issue 21 section 5) ------------------------------------------
# The model: configs/demo.py:quick, 100 GRPO steps of the tiny model on the plain colour task (the
# `warmup` run; measured there: last-20 reward 0.89, held-out 0.94), so it is partly competent on
# the graded rows below and their PISM levels are not noise. Every other run starts from it and
# keeps the demo's bare-letter answers: one token, only A-D (sample.allowed_tokens, no EOS).
# The data: DEMO_ROWS graded colour-choice rows (data.colour_graded: the shape's size, contrast and
# distractors vary row by row), of data.seed DEMO_SEED, neither the warm-up's rows (seed 0) nor
# the held-out eval's (mmjax.eval.synthetic_benchmarks.QA_SEED_OFFSET: seed 1000).
# Sizes and steps were chosen for the 15-minute budget before any grid ran; the learning-rate
# scale below comes from one measurement of the `full` row; nothing was tuned on the ordering.
DEMO_ROWS = 256  # rows scored, the pool every subset is drawn from
DEMO_SEED = 7
DEMO_EVAL_ROWS = 256  # held-out graded rows every eval answers (the `qa` synthetic benchmark)
DEMO_STEPS = 30  # optimizer steps of every GRPO and SFT run: the same budget for every paradigm
# SPEC 2.4's learning rates are a 7B's; the tiny model needs larger ones. One scale keeps the paper's
# ratios: GRPO 1e-4 alone, 2e-4 after SFT, SFT 2e-4 (configs/sft.py's 1e-6 x 200). Picked as the
# largest of x2000, x600, x200 at which GRPO on the full set beats the warm-up model on the held-out
# rows (measured, 30 steps: 35.2 %, 34.0 %, 45.3 % against 41.8 %; at x2000 the KL reaches 2 and the
# policy collapses onto one letter), a check on the `full` row alone, not on the paradigms' ordering.
DEMO_LR_SCALE = 200
DEMO_TASK = {
    "model.attention": "explicit",  # short sequences: the plain path is fastest on CPU (configs/demo.py)
    "data.source": "colour_choice", "data.colour_graded": True, "data.num_samples": DEMO_ROWS,
    "data.seed": DEMO_SEED, "data.image_size": (56, 56), "data.min_pixels": 56 * 56, "data.max_pixels": 56 * 56,
    "data.min_vision_rows": 16, "data.system_prompt": False,
    "sample.allowed_tokens": ("A", "B", "C", "D"), "sample.allow_eos": False,
}
DEMO = {  # per kind of run, on top of its `:tiny` recipe
    "score": {**DEMO_TASK, "data.batch_size": 32, "score.ratios": tuple(i / 10 for i in range(10)),  # SPEC 2.1
              "score.attempts": 10, "score.max_new_tokens": 1, "score.sampler_batch": 320, "score.cmab_batch": 32},
    # sft.num_epochs 0: the data repeats and max_steps ends the run, so every SFT stage has DEMO_STEPS
    # steps however few rows its subset has (5 epochs of 14 medium rows would be 8 steps).
    "sft": {**DEMO_TASK, "data.batch_size": 8, "sft.num_epochs": 0, "optim.learning_rate": 2e-4},  # 1e-6 x 200
    "eval": {**DEMO_TASK, "eval.benchmarks.qa": "synthetic", "eval.benchmarks.mmstar": "",
             "eval.benchmarks.jigsaw": "", "eval.synthetic_rows": DEMO_EVAL_ROWS, "eval.system_prompt": False,
             "eval.max_new_tokens": 1, "eval.batch_size": 32},
}
DEMO_GRPO = {**DEMO_TASK, "data.batch_size": 8, "grpo.num_generations": 8,  # SPEC 2.4: 8 prompts x 8
             "grpo.max_completion_length": 1}


def parse(arg):
    """The recipe's arguments; `pism`, `cmab`, `vrt` and `vpt` alone stand for method= / sizes=."""
    items = [item.strip() for item in (arg or "").split(",")]
    for a, b in (("pism", "cmab"), ("vrt", "vpt")):
        if a in items and b in items:
            raise ValueError(f"{FILE}: {a} and {b} both given in {arg!r}: a grid is one of them "
                             f"(run each in a workdir of its own)")
    args = recipe.parse_args(",".join(WORDS.get(i, i) for i in items), FILE, HELP, **ARGS)
    for name, allowed in (("method", METHODS), ("sizes", SIZES)):
        if getattr(args, name) not in ("", *allowed):
            raise ValueError(f"{FILE}: {name}={getattr(args, name)!r} is not one of {list(allowed)}")
    files = {n: getattr(args, n) for n in ("model", "data", *BENCHMARKS) if getattr(args, n)}
    if args.demo and args.sizes:
        raise ValueError(f"{FILE}: demo is a grid of its own (its warm-up model, its graded rows): drop {args.sizes}")
    if (args.tiny or args.demo) and files:
        raise ValueError(f"{FILE}: {'demo' if args.demo else 'tiny'} takes no files (its runs read synthetic rows "
                         f"and benchmarks); drop {', '.join(f'{n}=' for n in files)}")
    if args.demo:
        args.tiny = False  # implied (every run is its recipe's :tiny), but the demo keeps its score file
        args.method = args.method or "pism"
    for name, path in files.items():  # absolute: each run's command (and a Slurm script) holds it
        setattr(args, name, os.path.abspath(path))
    return args


def subset_size(subset: str, method: str, sizes: str) -> int:
    """The paper's row count of a subset (SPEC 2.1 / 2.2 counts)."""
    return sum(COUNTS[method, sizes][level] for level in SUBSETS[subset][2])


def _path(name: str) -> str:
    """configs/<name>.py, beside this file (relative when this file was named so)."""
    return os.path.join(os.path.dirname(__file__), f"{name}.py")


def _recipe(name: str, args) -> str:
    """The --config of a run: the recipe, its `:tiny` variant with tiny or demo."""
    return _path(name) + (":tiny" if args.tiny or args.demo else "")


def _files(args, data: bool = True) -> dict:
    """The model and (for the score, SFT and GRPO runs) the training set; tiny: none."""
    out = {"model.hf_dir": args.model} if args.model else {}
    if data and args.data:
        out["data.path"] = args.data
        out["data.source"] = "parquet" if args.data.endswith(".parquet") else "jsonl"
    return out


def _selection(subset: str, args, score_file: str) -> dict:
    """data.selection.* of a run training on `subset`. Tiny runs name no score file (see the
    docstring), but keep the rest, so the sweep's pre-run check still reads every value."""
    kind, levels, _ = SUBSETS[subset]
    out = {"data.selection.score_file": score_file} if score_file and not args.tiny else {}
    out["data.selection.subset"] = kind
    out["data.selection.method"] = args.method or "pism"
    out["data.selection.threshold_mode"] = "stored"  # the scoring run's levels (SPEC 2.1 / 2.2 thresholds)
    if kind == "levels":
        out["data.selection.levels"] = levels
        out["data.selection.n"] = 0  # every row at those levels
    if kind == "random":
        out["data.selection.size_of"] = ",".join(SUBSETS[subset][2])
        out["data.selection.seed"] = SEEDS[subset]
    return out


def _steps(args) -> dict:
    """max_steps of every GRPO and SFT run when the arguments fix it (steps=, or the demo's)."""
    steps = args.steps or (DEMO_STEPS if args.demo else 0)
    return {"max_steps": steps} if steps else {}


def _lr(rate: float, args) -> float:
    """A SPEC 2.4 rate, x DEMO_LR_SCALE in the demo; 6 digits, so 1e-6 x 200 reads 0.0002, not 0.000199..."""
    return float(f"{rate * (DEMO_LR_SCALE if args.demo else 1):.6g}")


def _grpo(subset: str, args, score_file: str, lr: float) -> dict:
    out = {**_files(args), **_selection(subset, args, score_file), "optim.learning_rate": lr, **_steps(args)}
    if not out.get("max_steps") and not args.tiny and args.sizes:
        # SPEC 2.4: one epoch of 8 prompts a step over the paper's rows
        out["max_steps"] = math.ceil(subset_size(subset, args.method or "pism", args.sizes) / PROMPTS_PER_STEP)
    return {**out, **(DEMO_GRPO if args.demo else {})}


def get_config(arg=None):
    """The headline row, GRPO only on medium + hard (configs/difficulty_grpo.py; see the docstring)."""
    args = parse(arg)
    spec = importlib.util.spec_from_file_location("configs_difficulty_grpo", _path("difficulty_grpo"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("tiny" if args.tiny or args.demo else None)
    for key, value in _grpo("midhard", args, "", _lr(GRPO_ONLY_LR, args)).items():
        *parents, leaf = key.split(".")
        node = c
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return c


def get_sweep(arg=None):
    args = parse(arg)
    if not args.method or not (args.sizes or args.demo):
        raise ValueError(f"{FILE}: name the scores (pism or cmab) and the sizes (vrt or vpt), e.g. "
                         f"{FILE}:pism,vrt (or run {FILE}:demo)")
    missing = [n for n in ("model", "data") if not getattr(args, n)]
    if not (args.tiny or args.demo) and (missing or not any(getattr(args, b) for b in BENCHMARKS)):
        need = [f"{n}=" for n in missing] + ([f"one of {', '.join(f'{b}=' for b in BENCHMARKS)}"]
                                             if not any(getattr(args, b) for b in BENCHMARKS) else [])
        raise ValueError(f"{FILE}: the full-scale grid needs {' and '.join(need)} (or `tiny`, which needs no files)")

    runs = []
    # Where every run not trained by the grid starts: the base model (model=), or the demo's warm-up.
    base = {"init_from": "{warmup}"} if args.demo else {}
    if args.demo:
        runs.append(sweep.Run("warmup", config=_path("demo") + ":quick"))
    demo = {kind: (overrides if args.demo else {}) for kind, overrides in DEMO.items()}
    # The scores of the chosen method only: PISM costs 10 ratios x 10 answers a row (SPEC 2.1),
    # CMAB one answer (SPEC 2.2), so a CMAB grid scoring PISM too would spend ~100x its need.
    runs.append(sweep.Run("score", {**_files(args), **base, "score.methods": (args.method,), **demo["score"]},
                          config=_recipe("difficulty_score", args)))
    grpo, sft = _recipe("difficulty_grpo", args), _recipe("sft", args)
    benchmarks = {f"eval.benchmarks.{b}": getattr(args, b) for b in BENCHMARKS if getattr(args, b)}
    evaluate = _recipe("eval", args)  # tiny: configs/eval.py:tiny's synthetic mmstar and jigsaw, for every eval
    runs.append(sweep.Run("eval_base", {**_files(args, data=False), **base, **benchmarks, **demo["eval"]},
                          config=evaluate))

    def row(name: str, overrides: dict, after: str):
        # `after` is also implied by the placeholders at full scale; tiny runs name no score file.
        runs.append(sweep.Run(name, overrides, after=(after,), config=grpo))
        runs.append(sweep.Run(f"eval_{name}", {**_files(args, data=False), **benchmarks, **demo["eval"],
                                               "init_from": f"{{{name}}}"}, config=evaluate))

    for subset in GRPO_ONLY:
        row(f"grpo_{subset}", {**_grpo(subset, args, SCORE_FILE, _lr(GRPO_ONLY_LR, args)), **base}, "score")
    for x, y in SFT_THEN_GRPO:
        if not any(r.name == f"sft_{x}" for r in runs):  # one SFT run per subset, shared by its rows
            # SPEC 2.4 SFT as configs/sft.py sets it: lr 1e-6 cosine, warmup 0.1, 5 epochs, ViT and merger frozen.
            overrides = {**_files(args), **_selection(x, args, SCORE_FILE), **_steps(args), **base, **demo["sft"]}
            runs.append(sweep.Run(f"sft_{x}", overrides, after=("score",), config=sft))
        row(f"sft_{x}__grpo_{y}", {**_grpo(y, args, SCORE_FILE, _lr(GRPO_AFTER_SFT_LR, args)),
                                   "init_from": f"{{sft_{x}}}"}, f"sft_{x}")
    return runs
