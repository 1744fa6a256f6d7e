"""Every recipe in configs/ loads with every documented argument; the GRPO ones train two steps.

The full-scale recipes (Qwen2.5-VL-7B on an 8-GPU host or a TPU slice) are shrunk to the
tiny model, tiny data and a 1x1x1 mesh; everything the test does not override (task,
rewards, GRPO algorithm, remat) runs as the recipe sets it, so a recipe that stops matching
the code fails here.
"""

from __future__ import annotations

import glob
import importlib
import json
import os

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from PIL import Image

from mmjax.data import synthetic
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import recipe, setup
from mmjax.jobs import sft as sft_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith("_"))
FULL_SCALE = ("jigsaw_image", "jigsaw_video", "jigsaw_3d", "difficulty_grpo")


def _module(name: str):
    return importlib.import_module(f"configs.{name}")


def _arg_strings(name: str) -> list[str | None]:
    """No argument, each documented one alone, and all of them together."""
    names = list(getattr(_module(name), "ARGS", {}))
    combos = [None] + names + ([",".join(names)] if len(names) > 1 else [])
    return combos


CASES = [(name, arg) for name in RECIPES for arg in _arg_strings(name)]


def test_the_full_scale_recipes_are_all_here():
    assert set(FULL_SCALE) <= set(RECIPES)


# ---- loading: every recipe, every argument ---------------------------------------------------

def _prompts_per_step(c, processes: int) -> int:
    return c.data.batch_size * c.gradient_accumulation_steps * processes


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" for n, a in CASES])
def test_recipe_loads_and_follows_its_paper(name, arg):
    c = _module(name).get_config(arg)
    args = recipe.parse_args(arg, getattr(_module(name), "ARGS", {}), name)
    # The job-side checks run on every recipe: each section builds its dataclass.
    setup.grpo_config(c), setup.reward(c)
    # An SFT run's length is its data's sft.num_epochs passes (max_steps 0): any count builds it here.
    sft_job.optimizer_config(c, steps=100) if c.mode == "sft" else setup.optimizer_config(c)
    if name not in FULL_SCALE:
        return
    processes = 8 if "tpu" in args else 1  # the TPU layouts are sized for v5p-64's 8 hosts
    assert c.tokenizer == "hf" and c.model.dtype == "float32" and c.model.compute_dtype == "bfloat16"
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == ((1, -1, 1) if "tpu" in args else (1, 8, 1))
    assert c.model.remat != "none" and c.model.vision_remat != "none"
    if name.startswith("jigsaw"):  # SPEC 1.6
        g = c.grpo
        assert (g.num_generations, g.temperature, g.top_p, g.beta, g.epsilon, g.delta, g.loss_type,
                g.num_iterations, g.max_completion_length) == (16, 1.0, 1.0, 0.0, 0.2, 3.0, "dapo", 1, 2048)
        assert (c.optim.learning_rate, c.optim.schedule, c.optim.weight_decay, c.optim.max_grad_norm) == (
            1e-6, "constant", 0.01, 1.0)
        assert _prompts_per_step(c, processes) == (256 if name == "jigsaw_image" else 128)
        assert c.max_steps == (800 if name == "jigsaw_3d" else 1000)
        container = "boxed" if "code" in args else "answer"  # SPEC 1.4: the prompt's and the checker's
        assert c.data.container == container
        assert all(o.container == container for o in c.rewards.options.values())
        jigsaw = c.rewards.options.jigsaw
        assert jigsaw.get("partial_min_pieces", 0) == (5 if "code" in args else 0)
        assert jigsaw.get("repetition_penalty", 0.0) == (-0.5 if "code" in args else 0.0)
        assert dict(c.rewards.weights)["jigsaw"] == 1.0
    else:  # SPEC 2.4
        g = c.grpo
        assert (g.num_generations, g.temperature, g.beta, g.max_completion_length) == (8, 1.0, 0.001, 1024)
        assert c.optim.learning_rate == 5e-7
        assert _prompts_per_step(c, processes) == 8
        assert c.data.max_prompt_length + g.max_completion_length == 2048
        assert dict(c.rewards.weights) == {"accuracy": 1.0}  # one accuracy reward, no format reward
        assert c.data.system_prompt
        sel = c.data.selection  # SPEC 2.4: medium + hard by PISM, from a score file the run names
        assert (sel.subset, sel.levels, sel.method, sel.score_file) == ("levels", "mid+hard", "pism", "")


@pytest.mark.parametrize("name", FULL_SCALE)
def test_the_container_is_one_field(name):
    """Overriding data.container (as --config.data.container does) moves the checker with it."""
    c = _module(name).get_config()
    c.data.container = "boxed"
    assert {o.container for o in c.rewards.options.values()} == {"boxed"}
    assert {f.keywords["container"] for f in setup.reward(c).fns.values()} == {"boxed"}


@pytest.mark.parametrize("arg", ["cod", "code,gpu", "tpu;code"])
def test_unknown_argument_names_the_allowed_ones(arg):
    with pytest.raises(ValueError, match=r"unknown config argument.*allowed.*code.*tpu"):
        _module("jigsaw_image").get_config(arg)
    assert recipe.parse_args(" code , ,tpu ", recipe.JIGSAW_ARGS, "x") == {"code", "tpu"}
    assert recipe.parse_args("", recipe.JIGSAW_ARGS, "x") == frozenset()


def test_setup_errors_name_the_field(tmp_path):
    c = _module("jigsaw_3d").get_config()
    c.data.source = "video_folder"
    with pytest.raises(setup.ConfigFieldError, match=r"data.task='jigsaw_3d' needs config.data.source"):
        setup.transforms(c.data, None, None)
    c = _module("jigsaw_video").get_config()
    c.data.path = str(tmp_path)  # a folder without videos
    with pytest.raises(setup.ConfigFieldError, match=r"config.data.path=.*video_folder.*no video files"):
        setup.source(c.data)
    c.data.path = str(tmp_path / "x.mp4")
    with pytest.raises(setup.ConfigFieldError, match=r"needs config.data.path to be a folder"):
        setup.source(c.data)
    c.data.video_trim = 0.5
    with pytest.raises(setup.ConfigFieldError, match=r"config.data.*trim"):
        setup.transforms(c.data, None, None)


# ---- two GRPO steps per recipe on tiny data ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe_data")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for i in range(4):  # 84 px: the smallest a 3x3 jigsaw takes (SPEC 1.1)
        Image.fromarray(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)).save(images / f"{i}.png")
    videos = root / "videos"
    videos.mkdir()
    for i in range(2):  # 24 s, the shortest a video jigsaw takes (SPEC 1.2), at 2 fps
        synthetic.write_moving_shapes_video(videos / f"{i}.mp4", seconds=24, fps=2, size=(32, 32), seed=i)
    rgbd = root / "rgbd"
    synthetic.write_rgbd_scenes(rgbd, 2, size=(168, 224))
    qa = root / "qa.jsonl"
    with open(qa, "w") as f:
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(root / f"qa{i}.png")
            f.write(json.dumps({"images": [f"qa{i}.png"], "prompt": "<image>Which colour? A. red B. blue",
                                "solution": "A", "task": "choice"}) + "\n")
    return {"image_folder": str(images), "video_folder": str(videos), "rgbd_folder": str(rgbd),
            "jsonl": str(qa)}


def _tiny(c, data_paths):
    """The recipe shrunk to run on CPU in seconds; what it does not touch stays the recipe's."""
    c.model.hf_dir = ""
    c.model.preset = "tiny"
    c.tokenizer = "tiny"
    c.model.compute_dtype = "float32"
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, 1
    c.max_steps = 2
    c.save_steps = 2
    c.gradient_accumulation_steps = 1
    c.data.batch_size = 2
    c.data.worker_count = 0
    c.data.min_vision_rows = 16
    c.grpo.num_generations = 2
    c.grpo.max_completion_length = 4
    if c.data.source in data_paths:
        c.data.path = data_paths[c.data.source]
    if c.data.task == "jigsaw_image":
        c.data.min_pixels = c.data.max_pixels = 28 * 28  # a 28 px tile = one vision token
    elif c.data.task == "jigsaw_video":
        c.data.video_frame_pixels = 56 * 56  # 2 frames of 56x56 a clip = 4 vision tokens
        c.data.video_max_frames = 2
        c.data.min_pixels = c.data.max_pixels = 56 * 56
    elif c.data.task in ("jigsaw_3d", "qa") and c.data.source != "colour_choice":
        c.data.min_pixels, c.data.max_pixels = 28 * 28, 56 * 56
    return c


def _run_key(c) -> str:
    """Configs that differ only in fields the test overrides (mesh, batch sizes) train alike."""
    return c.to_json_best_effort(sort_keys=True)


# Recipes of the other jobs; each of their tests runs its recipe's job on tiny data:
# tests/difficulty/test_score_job.py, tests/train/test_sft.py, tests/eval/test_eval.py.
NOT_GRPO = ("score", "sft", "eval")


def _runs():
    seen, runs = set(), []
    for name, arg in CASES:
        if _module(name).get_config(arg).mode in NOT_GRPO:
            continue
        key = _run_key(_tiny(_module(name).get_config(arg), {}))
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
    return setup.tokenizer(recipe.base())  # the tiny tokenizer, shared by every run


@pytest.mark.parametrize("name,arg", RUNS, ids=[f"{n}:{a}" for n, a in RUNS])
def test_two_grpo_steps(name, arg, tiny_data, tok, shared_compiles, tmp_path):
    c = _tiny(_module(name).get_config(arg), tiny_data)
    learner = grpo_job.build_learner(c, str(tmp_path), tok=tok)
    last = learner.train()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    assert np.isfinite(last["grad_norm"]) and np.isfinite(last["reward"])
    for reward_name in c.rewards.weights:
        assert f"rewards/{reward_name}/mean" in last


def test_a_mesh_axis_of_minus_one_shards_the_model(tok):
    """The TPU layouts give fsdp=-1 ("all the devices"): the model must still be sharded."""
    c = _tiny(_module("jigsaw_image").get_config("tpu"), {})
    c.mesh.fsdp = -1
    holder = setup.model(c, tok)
    assert holder.mesh is not None and holder.mesh.shape["fsdp"] == jax.device_count()
