"""configs/paradigms.py, the difficulty paper's paradigm grid (issue 21 section 3), as the sweep
sees it before anything runs: the run names, every dependency, each row's learning rate (SPEC 2.4),
subset sizes and step counts (SPEC 2.1 / 2.2 counts), and every run's command line through the
sweep's own pre-run check (mmjax.sweep.cli.sweep with dry_run, as `python -m mmjax.sweep --dry_run`
runs it), so a typo in the grid fails here. Nothing is built or run."""

import math
import os
import shlex
import subprocess
import sys

import pytest

from mmjax.sweep import check, cli, plan
from mmjax.sweep.spec import SweepError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARADIGMS = os.path.join(ROOT, "configs", "paradigms.py")
RECIPES = {name: os.path.join(ROOT, "configs", f"{name}.py") for name in ("difficulty_score", "difficulty_grpo",
                                                                           "sft", "eval")}

# The paper's level counts, typed again from SPEC 2.1 (PISM) and SPEC 2.2 (CMAB): VRT = the
# reasoning part (27,133 rows), VPT = the perception part (20,633 rows).
SPEC = {("pism", "vrt"): dict(easy=5048, medium=1061, hard=1618, unsolved=19406),
        ("pism", "vpt"): dict(easy=7827, medium=4872, hard=1454, unsolved=6480),
        ("cmab", "vrt"): dict(easy=2170, medium=3604, hard=2166, unsolved=19193),
        ("cmab", "vpt"): dict(easy=6753, medium=6029, hard=1001, unsolved=6850)}
TOTAL = {"vrt": 27133, "vpt": 20633}

GRPO_ONLY = ["grpo_full", "grpo_unsolved", "grpo_random", "grpo_midhard"]
SFT = ["sft_mid", "sft_hard", "sft_rand_m", "sft_rand_h"]
SFT_GRPO = [f"sft_{x}__grpo_{y}" for x, y in [("mid", "mid"), ("mid", "hard"), ("hard", "mid"), ("hard", "hard"),
                                               ("rand_m", "rand_m"), ("rand_m", "rand_h"), ("rand_h", "rand_m"),
                                               ("rand_h", "rand_h")]]
ROWS = GRPO_ONLY + SFT_GRPO
EVALS = ["eval_base"] + [f"eval_{row}" for row in ROWS]

COMBOS = [(m, s, tiny) for tiny in (False, True) for m in ("pism", "cmab") for s in ("vrt", "vpt")]
IDS = [f"{m},{s}" + (",tiny" if tiny else "") for m, s, tiny in COMBOS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Stand-ins for the model folder, the training set and two benchmark files (the pre-run check
    only asks that they exist)."""
    d = tmp_path_factory.mktemp("paradigm_files")
    (d / "qwen").mkdir()
    for name in ("train.jsonl", "mathvista.jsonl", "mmstar.jsonl"):
        (d / name).write_text("")
    return {"model": str(d / "qwen"), "data": str(d / "train.jsonl"), "mathvista": str(d / "mathvista.jsonl"),
            "mmstar": str(d / "mmstar.jsonl")}


def _value(method, sizes, tiny, files) -> str:
    extra = ["tiny"] if tiny else [f"{k}={v}" for k, v in files.items()]
    return f"{PARADIGMS}:" + ",".join([method, sizes, *extra])


_PLANS = {}


def _grid(method, sizes, tiny, files, workdir="/tmp/paradigms_w"):
    """(planned runs by name, their parsed configs by name), as mmjax.main would load each."""
    key = (method, sizes, tiny, workdir)
    if key not in _PLANS:
        value = _value(method, sizes, tiny, files)
        runs, has_get_config = plan.load(value)
        planned = plan.plan(runs, value, workdir, has_get_config)
        _PLANS[key] = ({p.name: p for p in planned}, {p.name: check.parse(p.config, p.flags) for p in planned})
    return _PLANS[key]


def _closure(needs, name):
    seen, todo = set(), list(needs[name])
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += needs[dep]
    return seen


@pytest.mark.parametrize("method,sizes,tiny", COMBOS, ids=IDS)
def test_the_grid_is_one_score_run_twelve_rows_four_sft_stages_and_thirteen_evals(method, sizes, tiny, files):
    planned, configs = _grid(method, sizes, tiny, files)
    assert sorted(planned) == sorted(["score"] + ROWS + SFT + EVALS) and len(planned) == 30
    recipe = {"score": "difficulty_score", **{n: "difficulty_grpo" for n in ROWS}, **{n: "sft" for n in SFT},
              **{n: "eval" for n in EVALS}}
    for name, p in planned.items():
        assert p.config == RECIPES[recipe[name]] + (":tiny" if tiny else ""), name
        assert p.workdir == os.path.join("/tmp/paradigms_w", "runs", name)
    assert [configs[n].mode for n in ("score", "grpo_full", "sft_mid", "eval_base")] == ["score", "grpo", "sft", "eval"]
    assert tuple(configs["score"].score.methods) == (method,)  # the grid's method only (see the recipe)


@pytest.mark.parametrize("method,sizes,tiny", COMBOS, ids=IDS)
def test_every_row_waits_for_the_scores_its_sft_stage_and_every_eval_for_its_row(method, sizes, tiny, files):
    planned, configs = _grid(method, sizes, tiny, files)
    needs = {n: p.needs for n, p in planned.items()}
    order = list(planned)  # plan.plan's order: the one the runner starts them in
    assert order[0] == "score" and needs["score"] == ()
    for name in ROWS + SFT:
        assert "score" in _closure(needs, name), name
    for name in GRPO_ONLY + SFT:
        assert needs[name] == ("score",), name
        assert configs[name].init_from == ""  # from the base model (model.hf_dir)
    for name in SFT_GRPO:
        sft = name.split("__")[0]
        assert sft in needs[name] and set(needs[name]) <= {sft, "score"}, name
        assert configs[name].init_from == planned[sft].workdir
    assert needs["eval_base"] == () and configs["eval_base"].init_from == ""
    for row in ROWS:
        assert needs[f"eval_{row}"] == (row,)
        assert configs[f"eval_{row}"].init_from == planned[row].workdir
    for name in order:  # dependency order: each run after everything it waits for
        assert all(order.index(dep) < order.index(name) for dep in needs[name]), name
    # One SFT run per subset, shared by the two rows that start from it.
    assert {n.split("__")[0] for n in SFT_GRPO} == set(SFT)
    assert all(sum(name in needs[r] for r in SFT_GRPO) == 2 for name in SFT)


@pytest.mark.parametrize("method,sizes,tiny", COMBOS, ids=IDS)
def test_learning_rates_subsets_sizes_and_steps_follow_spec(method, sizes, tiny, files):
    planned, configs = _grid(method, sizes, tiny, files)
    counts = SPEC[method, sizes]
    assert sum(counts.values()) == TOTAL[sizes]
    sft_recipe = check.parse(RECIPES["sft"] + (":tiny" if tiny else ""), [])
    # subset name -> (data.selection.subset, levels, the levels a random subset is as large as,
    # the paper's rows it trains on)
    subsets = {"full": ("full", None, None, TOTAL[sizes]),
               "unsolved": ("levels", "unsolved", None, counts["unsolved"]),
               "random": ("random", None, "medium,hard", counts["medium"] + counts["hard"]),
               "midhard": ("levels", "mid+hard", None, counts["medium"] + counts["hard"]),
               "mid": ("levels", "medium", None, counts["medium"]),
               "hard": ("levels", "hard", None, counts["hard"]),
               "rand_m": ("random", None, "medium", counts["medium"]),
               "rand_h": ("random", None, "hard", counts["hard"])}
    score_file = os.path.join(planned["score"].workdir, "scores.parquet")
    seeds = {}

    def selection(name, subset):
        sel, (kind, levels, size_of, rows) = configs[name].data.selection, subsets[subset]
        assert sel.subset == kind and sel.method == method and sel.threshold_mode == "stored", name
        assert sel.score_file == ("" if tiny else score_file), name  # tiny: synthetic rows, no scores
        if levels is not None:
            assert sel.levels == levels and sel.n == 0, name
        if size_of is not None:  # random-of-same-size: as many rows as the scores put at those levels
            assert (sel.size_of, sel.n) == (size_of, 0), name
            assert seeds.setdefault(subset, sel.seed) == sel.seed, name  # the same draw in every run using it
        return rows

    for name in ROWS:
        c = configs[name]
        subset = name.split("grpo_")[-1]
        rows = selection(name, subset)
        # SPEC 2.4: lr 5e-7 for GRPO only, 1e-6 after SFT; one epoch of 8 prompts a step.
        assert c.optim.learning_rate == (1e-6 if name.startswith("sft_") else 5e-7), name
        assert c.max_steps == (10 if tiny else math.ceil(rows / 8)), name
        assert (c.grpo.num_generations, c.grpo.beta) == ((2, 0.001) if tiny else (8, 0.001))
    assert len(set(seeds.values())) == len(seeds) == 3  # random, rand_m, rand_h: three draws
    for name in SFT:
        selection(name, name.removeprefix("sft_"))
        c = configs[name]
        # SFT as configs/sft.py sets it (SPEC 2.4: lr 1e-6 cosine, warmup 0.1, 5 epochs, ViT and merger frozen).
        assert c.optim.to_dict() == sft_recipe.optim.to_dict() and c.sft.to_dict() == sft_recipe.sft.to_dict()
        assert (c.optim.learning_rate, c.optim.schedule, c.optim.warmup_ratio) == (1e-6, "cosine", 0.1)
        assert c.sft.num_epochs == (1 if tiny else 5) and c.optim.freeze_vision and c.optim.freeze_merger
        assert c.max_steps == sft_recipe.max_steps == 0
    if not tiny:  # every run reads the same model and training set
        for name in ["score"] + ROWS + SFT:
            assert (configs[name].model.hf_dir, configs[name].data.path, configs[name].data.source) == (
                files["model"], files["data"], "jsonl"), name


@pytest.mark.parametrize("method,sizes,tiny", COMBOS, ids=IDS)
def test_every_eval_runs_on_the_same_benchmarks(method, sizes, tiny, files):
    _, configs = _grid(method, sizes, tiny, files)
    benchmarks = {name: {k: v for k, v in configs[name].eval.benchmarks.items() if v} for name in EVALS}
    want = {"mmstar": "synthetic", "jigsaw": "synthetic"} if tiny else {"mathvista": files["mathvista"],
                                                                        "mmstar": files["mmstar"]}
    assert all(b == want for b in benchmarks.values()), benchmarks
    if not tiny:
        assert all(configs[name].model.hf_dir == files["model"] for name in EVALS)  # weights' config, tokenizer


# Two of the eight grids: the check reads the same recipes and keys in each (the per-grid values
# are the tests above); one full-scale (its files checked), one tiny.
@pytest.mark.parametrize("method,sizes,tiny", [("pism", "vrt", False), ("cmab", "vpt", True)], ids=["pism,vrt",
                                                                                               "cmab,vpt,tiny"])
def test_every_run_passes_the_sweeps_pre_run_check(method, sizes, tiny, files, tmp_path):
    lines = []
    code = cli.sweep(_value(method, sizes, tiny, files), str(tmp_path / "w"), dry_run=True, out=lines.append)
    assert code == 0  # else mmjax.sweep printed the runs and fields it refused (stderr)
    assert len(lines) == 60 and not (tmp_path / "w").exists()


def test_a_typo_in_a_run_of_the_grid_is_named_by_that_check(files):
    planned, _ = _grid("pism", "vrt", False, files)
    bad = planned["sft_mid__grpo_hard"]
    typo = bad.__class__(bad.name, bad.workdir, bad.config,
                         tuple(f.replace("learning_rate", "learnig_rate") for f in bad.flags), bad.needs, bad.command)
    errors = check.check([planned["score"], typo], lambda name: False)
    assert len(errors) == 1 and errors[0].startswith("run sft_mid__grpo_hard:") and "learnig_rate" in errors[0]


def test_dry_run_of_pism_vrt_prints_the_grid_in_dependency_order(files, tmp_path):
    value = "configs/paradigms.py:pism,vrt," + ",".join(f"{k}={v}" for k, v in files.items())
    w = tmp_path / "w"
    proc = subprocess.run([sys.executable, "-m", "mmjax.sweep", "--config", value, "--workdir", str(w), "--dry_run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    heads, commands = lines[0::2], [shlex.split(line) for line in lines[1::2]]
    assert len(heads) == len(commands) >= 26 and all(h.startswith("# [") for h in heads)
    names, seen = [], set()
    for k, (head, command) in enumerate(zip(heads, commands), 1):
        name, _, after = head.split("] ", 1)[1].partition(": after ")
        assert head.startswith(f"# [{k}/{len(heads)}] ")
        deps = [] if after == "nothing" else after.split(", ")
        assert set(deps) <= seen, (name, deps)  # everything it waits for came earlier
        assert command[:3] == [sys.executable, "-m", "mmjax.main"]
        assert command[command.index("--workdir") + 1] == str(w / "runs" / name)
        for flag in command:  # a path into another run's workdir names a dependency
            if str(w / "runs") in flag and not flag.startswith(str(w)):
                assert flag.split(str(w / "runs") + "/")[1].split("/")[0] in deps, (name, flag)
        names.append(name)
        seen.add(name)
    assert names[0] == "score" and sorted(names) == sorted(["score"] + ROWS + SFT + EVALS)
    grpo = commands[names.index("sft_mid__grpo_hard")]
    assert f"--config.init_from={w}/runs/sft_mid" in grpo and "--config.optim.learning_rate=1e-06" in grpo
    assert f"--config.data.selection.score_file={w}/runs/score/scores.parquet" in grpo
    assert "--config.data.selection.levels=hard" in grpo and "--config.max_steps=203" in grpo  # ceil(1618 / 8)
    assert not w.exists()


def test_arguments_are_checked_and_a_missing_file_is_named_before_anything_runs(files, tmp_path, capsys):
    from configs import paradigms  # pylint: disable=g-import-not-at-top
    for arg, why in [("vrt", "name the scores"), ("pism", "name the scores"),
                     ("pism,cmab,vrt", "pism and cmab both given"), ("pism,vrt,vpt", "vrt and vpt both given"),
                     ("method=pmis,vrt", r"method='pmis' is not one of \['pism', 'cmab'\]"),
                     ("pism,vrt", "full-scale grid needs model= and data= and one of mathvista="),
                     ("pism,vrt,tiny,model=/m", "tiny takes no files"),
                     ("pism,vrt,tiny,lr=1", r"unknown config argument\(s\) \['lr'\]")]:
        with pytest.raises(ValueError, match=why):
            paradigms.get_sweep(arg)
    with pytest.raises(SweepError, match="full-scale grid needs"):  # the sweep's one line for it
        plan.load(f"{PARADIGMS}:pism,vrt")
    missing = {**files, "data": str(tmp_path / "nope.jsonl")}
    lines = []
    assert cli.sweep(_value("pism", "vrt", False, missing), str(tmp_path / "w"), dry_run=True, out=lines.append) == 2
    assert lines == [] and not (tmp_path / "w").exists()
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 + len(ROWS) + len(SFT)  # every run reading data.path, each named once
    assert all(e.startswith("mmjax.sweep: error: run ") and f"config.data.path='{missing['data']}': no such file" in e
               for e in errors)


def test_get_config_is_the_headline_row():
    from configs import paradigms  # pylint: disable=g-import-not-at-top
    c = paradigms.get_config("cmab,vpt")
    assert c.mode == "grpo" and c.optim.learning_rate == 5e-7 and c.max_steps == math.ceil((6029 + 1001) / 8)
    assert (c.data.selection.subset, c.data.selection.levels, c.data.selection.method) == ("levels", "mid+hard", "cmab")
    tiny = paradigms.get_config("tiny,steps=2")
    assert (tiny.model.preset, tiny.max_steps, tiny.data.selection.method) == ("tiny", 2, "pism")


# ---- the demo (issue 21 section 5): the grid on a 2-core CPU ------------------------------------

@pytest.fixture(scope="module")
def demo():
    value = f"{PARADIGMS}:demo"
    runs, has_get_config = plan.load(value)
    planned = plan.plan(runs, value, "/tmp/paradigms_demo", has_get_config)
    return {p.name: p for p in planned}, {p.name: check.parse(p.config, p.flags) for p in planned}


def test_the_demo_grid_starts_from_its_warmup_on_graded_rows(demo):
    planned, configs = demo
    assert list(planned)[0] == "warmup" and sorted(planned) == sorted(["warmup", "score"] + ROWS + SFT + EVALS)
    assert planned["warmup"].config == os.path.join(ROOT, "configs", "demo.py") + ":quick"
    assert planned["warmup"].needs == () and configs["warmup"].mode == "demo" and configs["warmup"].max_steps == 100
    warm = planned["warmup"].workdir
    for name in ["score", "eval_base"] + GRPO_ONLY + SFT:  # what the full grid starts from model=
        assert configs[name].init_from == warm and "warmup" in planned[name].needs, name
    for name in SFT_GRPO:
        assert configs[name].init_from == planned[name.split("__")[0]].workdir
    for name in ["score"] + ROWS + SFT + EVALS:  # the tiny model's recipe, the demo's bare-letter task
        c = configs[name]
        assert (c.model.preset, c.tokenizer, c.data.source, c.data.colour_graded) == (
            "tiny", "tiny", "colour_choice", True), name
        assert (c.data.num_samples, c.data.seed, tuple(c.data.image_size)) == (256, 7, (56, 56)), name
        assert (tuple(c.sample.allowed_tokens), c.sample.allow_eos, c.data.system_prompt) == (
            ("A", "B", "C", "D"), False, False), name
    score = configs["score"]
    assert (tuple(score.score.methods), score.score.attempts, score.score.max_new_tokens) == (("pism",), 10, 1)
    assert tuple(score.score.ratios) == tuple(i / 10 for i in range(10))  # SPEC 2.1's ratios
    for name in ROWS:  # SPEC 2.4's learning rates x 200, the same 30 steps of 8 prompts x 8 answers each
        c = configs[name]
        assert c.optim.learning_rate == pytest.approx(2e-4 if name.startswith("sft_") else 1e-4), name
        assert (c.max_steps, c.data.batch_size, c.grpo.num_generations, c.grpo.max_completion_length) == (
            30, 8, 8, 1), name
        assert c.data.selection.score_file == os.path.join(planned["score"].workdir, "scores.parquet"), name
    for name in SFT:
        c = configs[name]
        assert (c.max_steps, c.data.batch_size, c.optim.learning_rate) == (30, 8, pytest.approx(2e-4)), name
        assert c.sft.num_epochs == 0  # max_steps ends it: 30 steps, however few rows the subset has
        assert c.data.selection.score_file == os.path.join(planned["score"].workdir, "scores.parquet"), name
    assert configs["sft_rand_h"].data.selection.size_of == "hard"
    for name in EVALS:  # one held-out set of graded rows, answered as trained: one letter of A-D
        e = configs[name].eval
        assert {k: v for k, v in e.benchmarks.items() if v} == {"qa": "synthetic"}, name
        assert (e.synthetic_rows, e.max_new_tokens, e.system_prompt) == (256, 1, False), name


def test_the_demo_passes_the_pre_run_check_and_takes_no_files(tmp_path):
    from configs import paradigms  # pylint: disable=g-import-not-at-top
    lines = []
    assert cli.sweep(f"{PARADIGMS}:demo", str(tmp_path / "w"), dry_run=True, out=lines.append) == 0
    assert len(lines) == 62 and not (tmp_path / "w").exists()
    assert all(r.config.endswith(":tiny") for r in paradigms.get_sweep("demo,cmab") if r.name != "warmup")
    for arg, why in [("demo,vrt", "demo is a grid of its own .*drop vrt"), ("demo,model=/m", "demo takes no files")]:
        with pytest.raises(ValueError, match=why):
            paradigms.get_sweep(arg)
    assert [r.overrides for r in paradigms.get_sweep("demo,tiny")] == [r.overrides for r in paradigms.get_sweep("demo")]
    row = paradigms.get_config("demo")  # the headline row alone: the demo's GRPO(midhard) on the tiny model
    assert (row.mode, row.model.preset, row.optim.learning_rate, row.max_steps, row.grpo.max_completion_length) == (
        "grpo", "tiny", 1e-4, 30, 1)
    assert (row.data.colour_graded, row.data.selection.levels, row.data.selection.score_file) == (True, "mid+hard", "")
