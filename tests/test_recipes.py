"""Every recipe in configs/ loads with every documented argument; `tiny` runs each GRPO one two steps.

The full-scale recipes (Qwen2.5-VL-7B on an 8-GPU host or a TPU slice) take a `tiny`
argument (mmjax.jobs.recipe.shrink_to_tiny): the tiny model, synthetic data in the task's
format and a 1-device mesh; everything else (task, rewards, GRPO algorithm, optimiser,
remat) runs as the recipe sets it, so a recipe that stops matching the code fails here.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from mmjax import config_schema
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import recipe, build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))
FULL_SCALE = ("jigsaw_image", "jigsaw_video", "jigsaw_3d", "difficulty_grpo", "difficulty_score", "sft", "eval")
PAPER_GRPO = ("jigsaw_image", "jigsaw_video", "jigsaw_3d", "difficulty_grpo")


def _module(name: str):
    return importlib.import_module(f"configs.{name}")


def _args(name: str, arg: str | None):
    m = _module(name)
    return recipe.parse_args(arg, name, getattr(m, "HELP", {}), **getattr(m, "ARGS", {}))


def _arg_strings(name: str) -> list[str | None]:
    """No argument, each documented switch alone, and all of them together (bool arguments)."""
    names = [n for n, default in getattr(_module(name), "ARGS", {}).items() if isinstance(default, bool)]
    return [None] + names + ([",".join(names)] if len(names) > 1 else [])


CASES = [(name, arg) for name in RECIPES for arg in _arg_strings(name)]


def test_the_full_scale_recipes_are_all_here_and_take_tiny():
    assert set(FULL_SCALE) <= set(RECIPES)
    for name in FULL_SCALE:
        assert _module(name).ARGS["tiny"] is False, name


# ---- loading: every recipe, every argument ---------------------------------------------------

def _prompts_per_step(c, processes: int) -> int:
    return c.data.batch_size * c.gradient_accumulation_steps * processes


def _build_sections(c) -> None:
    """The job-side conversions of every section the recipe's mode reads (each builds its dataclass)."""
    build.reward(c)
    if c.mode in ("grpo", "demo"):
        build.grpo_config(c), build.optimizer_config(c)
    if c.mode == "sft":  # an SFT run's length is its data's sft.num_epochs passes: any count builds it here
        build.optimizer_config(c, total_steps=100)
    if c.mode == "score":
        build.score_configs(c)
    if c.mode == "eval":
        build.eval_read_options(c), build.eval_score_options(c), build.eval_runner_config(c)


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_recipe_loads_and_follows_its_paper(name, arg):
    c = _module(name).get_config(arg)
    args = _args(name, arg)
    assert recipe.check(c) == []  # every value inside its field's allowed set
    assert config_schema.unknown_fields(c, recipe.schema_of(c)) == []  # every field has a dataclass
    _build_sections(c)
    if name not in PAPER_GRPO or getattr(args, "tiny", False):
        return
    processes = 8 if args.tpu else 1  # the TPU layouts are sized for v5p-64's 8 hosts
    lora = getattr(args, "lora", False)  # recipe.apply_lora: "LoRA Without Regret"'s settings
    assert (c.lora.rank, c.lora.alpha, c.model.frozen_dtype) == ((32, 32.0, "bfloat16") if lora else (0, 16.0, ""))
    lr_scale = 10 if lora else 1
    assert c.tokenizer == "hf" and c.model.dtype == "float32" and c.model.compute_dtype == "bfloat16"
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == ((1, 8, -1) if args.tpu else (1, 8, 1))
    if args.tpu:  # v5p-64: the prompts of a micro-batch split over the 8 fsdp shards
        assert c.data.batch_size * processes % 8 == 0
    assert c.model.remat != "none" and c.model.vision_remat != "none"
    if name.startswith("jigsaw"):  # SPEC 1.6
        g = c.grpo
        assert (g.num_generations, g.temperature, g.top_p, g.beta, g.epsilon, g.delta, g.loss_type,
                g.num_iterations, g.max_completion_length) == (16, 1.0, 1.0, 0.0, 0.2, 3.0, "dapo", 1, 2048)
        assert (c.optim.learning_rate, c.optim.schedule, c.optim.weight_decay, c.optim.max_grad_norm) == (
            pytest.approx(1e-6 * lr_scale), "constant", 0.01, 1.0)
        assert _prompts_per_step(c, processes) == (256 if name == "jigsaw_image" else 128)
        assert c.max_steps == (800 if name == "jigsaw_3d" else 1000)
        container = "boxed" if args.code else "answer"  # SPEC 1.4: the prompt's and the checker's
        assert c.data.container == container
        assert all(o.container == container for o in c.rewards.options.values())
        jigsaw = c.rewards.options.jigsaw
        assert jigsaw.get("partial_min_pieces", 0) == (5 if args.code else 0)
        assert jigsaw.get("repetition_penalty", 0.0) == (-0.5 if args.code else 0.0)
        assert dict(c.rewards.weights)["jigsaw"] == 1.0
    else:  # SPEC 2.4
        g = c.grpo
        assert (g.num_generations, g.temperature, g.beta, g.max_completion_length) == (8, 1.0, 0.001, 1024)
        assert c.optim.learning_rate == pytest.approx(5e-7 * lr_scale)
        assert _prompts_per_step(c, processes) == 8
        assert c.data.max_prompt_length + g.max_completion_length == 2048
        assert dict(c.rewards.weights) == {"accuracy": 1.0}  # one accuracy reward, no format reward
        assert c.data.system_prompt
        sel = c.data.selection  # SPEC 2.4: medium + hard by PISM, from a score file the run names
        assert (sel.subset, sel.levels, sel.method, sel.score_file) == ("levels", "mid+hard", "pism", "")


@pytest.mark.parametrize("name", PAPER_GRPO)
def test_the_container_is_one_field(name):
    """Overriding data.container (as --config.data.container does) moves the checker with it."""
    c = _module(name).get_config()
    c.data.container = "boxed"
    assert {o.container for o in c.rewards.options.values()} == {"boxed"}
    assert {f.keywords["container"] for f in build.reward(c).fns.values()} == {"boxed"}


# ---- recipe arguments: typed, as big_vision's parse_arg ---------------------------------------

@pytest.mark.parametrize("arg", ["cod", "code,gpu", "tpu;code"])
def test_unknown_argument_names_the_allowed_ones(arg):
    with pytest.raises(ValueError, match=r"unknown config argument.*allowed.*code: .*tpu: .*tiny: .*steps: "):
        _module("jigsaw_image").get_config(arg)


def test_arguments_are_typed_by_their_defaults():
    parse = lambda arg: recipe.parse_args(arg, "configs/x.py", **recipe.JIGSAW_ARGS)  # noqa: E731
    assert vars(parse(" code , ,tpu ")) == dict(code=True, tpu=True, tiny=False, steps=0, lora=False)
    assert vars(parse("")) == vars(parse(None)) == dict(code=False, tpu=False, tiny=False, steps=0, lora=False)
    assert vars(parse("tiny,steps=20,code=false")) == dict(code=False, tpu=False, tiny=True, steps=20, lora=False)
    assert vars(parse("tpu=1,tiny=yes")) == dict(code=False, tpu=True, tiny=True, steps=0, lora=False)
    typed = recipe.parse_args("size=3b,lr=3e-4,frames=8", "configs/y.py", size="7b", lr=1e-6, frames=16)
    assert (typed.size, typed.lr, typed.frames) == ("3b", 3e-4, 8)
    for bad, why in [("steps=x", r"steps='x' is not an int \(default 0\)"),
                     ("steps=1.5", r"steps='1.5' is not an int"),
                     ("code=maybe", r"code='maybe' is not a bool \(default False\)"),
                     ("steps", r"'steps' needs a value: steps=<int>"),
                     ("tiny,tiny", r"'tiny' given twice"),
                     ("stesp=3", r"unknown config argument\(s\) \['stesp'\].*did you mean \['steps'\]")]:
        with pytest.raises(ValueError, match=r"^configs/x\.py: .*" + why + r".*allowed.*steps: .*\(int, default 0\)"):
            parse(bad)
    with pytest.raises(ValueError, match=r"lr='fast' is not a float \(default 1e-06\)"):
        recipe.parse_args("lr=fast", "configs/y.py", lr=1e-6)
    with pytest.raises(TypeError, match="bool, int, float or str"):
        recipe.parse_args("", "configs/y.py", sizes=(1, 2))
    c = _module("jigsaw_image").get_config("tiny,steps=20")
    assert c.max_steps == 20 and c.model.preset == "tiny"


def test_setup_errors_name_the_field(tmp_path):
    c = _module("jigsaw_3d").get_config()
    c.data.source = "video_folder"
    with pytest.raises(build.ConfigFieldError, match=r"data.task='jigsaw_3d' needs config.data.source"):
        build.transforms(c.data, None, None)
    c = _module("jigsaw_video").get_config()
    c.data.path = str(tmp_path)  # a folder without videos
    with pytest.raises(build.ConfigFieldError, match=r"config.data.path=.*video_folder.*no video files"):
        build.source(c.data)
    c.data.path = str(tmp_path / "x.mp4")
    with pytest.raises(build.ConfigFieldError, match=r"needs config.data.path to be a folder"):
        build.source(c.data)
    c.data.video_trim = 0.5
    with pytest.raises(build.ConfigFieldError, match=r"config.data.*trim"):
        build.transforms(c.data, None, None)


# ---- `tiny`: each full-scale recipe as written, at laptop scale ---------------------------------

# What shrink_to_tiny may change; everything else stays the recipe's.
SCALE_FIELDS = {
    "tokenizer", "init_from", "model.hf_dir", "model.preset", "model.dtype", "model.compute_dtype",
    "mesh.data", "mesh.fsdp", "mesh.tensor", "max_steps", "save_steps", "gradient_accumulation_steps",
    "data.path", "data.data_root", "data.num_samples", "data.batch_size", "data.worker_count",
    "data.min_vision_rows", "data.max_prompt_length", "data.source", "data.image_size", "data.min_pixels",
    "data.max_pixels", "data.video_frame_pixels", "data.video_max_frames", "data.selection.score_file",
    "grpo.num_generations", "grpo.max_completion_length", "sft.num_epochs", "sft.max_answer_length",
    "score.ratios", "score.attempts", "score.max_new_tokens", "score.sampler_batch", "score.cmab_batch",
    "score.host_threads", "score.progress", "score.cmab.definition", "score.cmab.layer",
}
EVAL_TINY = {"model.attention", "eval.max_new_tokens", "eval.batch_size", "eval.progress",
             "eval.benchmarks"}  # one field (a dict): its mmstar and jigsaw files become "synthetic"


def _flat(c) -> dict:
    return {info.path: config_schema._get(c, info.path)[1] for info in recipe.schema_of(c).fields()}


@pytest.mark.parametrize("name", FULL_SCALE)
def test_tiny_is_the_recipe_at_laptop_scale(name):
    full, tiny = _module(name).get_config(), _module(name).get_config("tiny")
    assert recipe.check(tiny) == [] and config_schema.unknown_fields(tiny, recipe.schema_of(tiny)) == []
    _build_sections(tiny)
    changed = {path for path, value in _flat(tiny).items() if _flat(full)[path] != value}
    assert changed <= SCALE_FIELDS | (EVAL_TINY if name == "eval" else set()), changed - SCALE_FIELDS
    assert (tiny.tokenizer, tiny.model.preset, tiny.model.hf_dir) == ("tiny", "tiny", "")
    assert (tiny.mesh.data, tiny.mesh.fsdp, tiny.mesh.tensor) == (1, 1, 1)
    assert tiny.data.source in build.SYNTHETIC_SOURCES and not tiny.data.path
    assert tiny.data.task == full.data.task  # the task's own format
    if tiny.data.task in build.TASK_SOURCES:
        assert tiny.data.source in build.TASK_SOURCES[tiny.data.task]


# ---- two GRPO steps per recipe, by its `tiny` argument -----------------------------------------

def _run_key(c) -> str:
    """Configs that differ only in what tiny overrides (mesh, batch sizes) train alike."""
    return c.to_json_best_effort(sort_keys=True)


def _runs():
    """Each GRPO recipe with no argument and with all its switches at once: every switch trains in one run
    (the switches are orthogonal: reward wording, mesh, LoRA), and every recipe trains in full too."""
    seen, runs = set(), []
    for name, arg in CASES:
        if arg is not None and arg != _arg_strings(name)[-1]:
            continue  # a single switch of several: the all-switches run trains it
        if "tiny" not in getattr(_module(name), "ARGS", {}) or _module(name).get_config(arg).mode != "grpo":
            continue  # the other jobs' recipes run in their tests (score, sft, eval) and below
        arg = ",".join([a for a in (arg or "").split(",") if a and a != "tiny"] + ["tiny", "steps=2"])
        key = _run_key(_module(name).get_config(arg))
        if key not in seen:
            seen.add(key)
            runs.append((name, arg))
    return runs


RUNS = _runs()


_CACHE_FLAGS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0.0,
                "jax_persistent_cache_min_entry_size_bytes": -1}


@pytest.fixture(scope="module")
def shared_compiles(tmp_path_factory):
    """A persistent compilation cache for this module's runs, restored afterwards.

    Runs that differ only in strings (reward options, the prompt's container wording) trace
    the same programs; each learner jits its own functions, so without a cache on disk every
    run would compile them again (about half this file's time).
    """
    old = {name: getattr(jax.config, name) for name in _CACHE_FLAGS}
    compilation_cache.reset_cache()  # an earlier test may have initialised it without a directory
    for name, value in {**_CACHE_FLAGS, "jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla"))}.items():
        jax.config.update(name, value)
    yield
    for name, value in old.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def tok():
    return build.tokenizer(recipe.base())  # the tiny tokenizer, shared by every run


@pytest.mark.slow  # a whole run of the job
@pytest.mark.parametrize("name,arg", RUNS, ids=[f"{n}:{a}" for n, a in RUNS])
def test_two_grpo_steps(name, arg, tok, shared_compiles, tmp_path):
    c = _module(name).get_config(arg)
    trainer = grpo_job.build_trainer(c, str(tmp_path), tok=tok)
    last = trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    assert np.isfinite(last["grad_norm"]) and np.isfinite(last["loss"])
    # The reward is the weighted sum of the functions' rewards, so its mean is theirs (TRL).
    weights = dict(c.rewards.weights)
    for r in rows:
        assert r["reward"] == pytest.approx(sum(w * r[f"rewards/{fn}/mean"] for fn, w in weights.items()), abs=1e-6)
    # num_tokens (TRL: prompt and completion tokens of the run so far) against the batches read
    # again from the same config: each prompt counts once per completion (G), each completion
    # its own length (N x G x the logged mean length).
    g, n = c.grpo.num_generations, c.data.batch_size * c.gradient_accumulation_steps
    batches = iter(build.dataset(c, tok, trainer.model))
    total = 0
    for r in rows:
        prompt_tokens = sum(int(np.asarray(next(batches)["attention_mask"]).sum())
                            for _ in range(c.gradient_accumulation_steps))
        total += g * prompt_tokens + round(n * g * r["completions/mean_length"])
        assert r["num_tokens"] == total, (r["step"], prompt_tokens)


@pytest.mark.slow  # a whole run of the job
def test_the_tiny_recipes_of_the_other_jobs_run_from_the_command_line(tmp_path):
    """`configs/sft.py:tiny,steps=2` trains two SFT steps as the recipe is written, from the CLI."""
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/sft.py:tiny,steps=2",
                           "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert json.load(open(tmp_path / "config.json"))["optim"]["freeze_vision"] is True  # the recipe's SPEC 2.4


# ---- a mesh axis of -1 on 8 devices --------------------------------------------------------------

_MESH_CHECK = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import json, sys
    sys.path.insert(0, os.getcwd())
    import jax
    from configs import jigsaw_image
    from mmjax.jobs import build
    c = jigsaw_image.get_config("tpu,tiny")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1  # the TPU layout's axes, on 8 host devices
    model = build.model(c, build.tokenizer(c), build.mesh(c))
    lm = model.params["language_model"]
    out = {"devices": jax.device_count(), "mesh": dict(model.mesh.shape)}
    for name, leaf in [("embedding", lm["embed_tokens"]["embedding"]),
                       ("gate_proj", lm["layers_0"]["mlp"]["gate_proj"]["kernel"])]:
        out[name] = {"shape": list(leaf.shape), "spec": [str(s) for s in leaf.sharding.spec],
                     "shards": sorted({str(s.index) for s in leaf.addressable_shards}),
                     "shard_shape": list(leaf.addressable_shards[0].data.shape)}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow  # a whole run of the job
def test_a_mesh_axis_of_minus_one_shards_the_model():
    """The TPU layouts give fsdp=-1 ("all the devices"): on 8 devices the weights are in 8 shards."""
    from mmjax.models.qwen2_5_vl import preset
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _MESH_CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["devices"] == 8 and out["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    text = preset("tiny").text  # hidden 64, MLP 128: the "embed" dim is split 8 ways (mmjax.sharding rules)
    embedding, gate = out["embedding"], out["gate_proj"]
    assert embedding["spec"][1] == "fsdp" and embedding["shard_shape"] == [embedding["shape"][0], text.hidden_size // 8]
    assert gate["spec"][0] == "fsdp" and gate["shape"] == [text.hidden_size, text.intermediate_size]
    assert gate["shard_shape"] == [text.hidden_size // 8, text.intermediate_size]
    assert len(embedding["shards"]) == len(gate["shards"]) == 8  # 8 different slices, one a device
