"""mode=plan: the planner's report, its arithmetic against the real pytrees, its worst cases
against the recipes' own counts, its proposals planned again, and attention's stand-in."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.jobs import build
from mmjax.models import attention as attention_lib
from mmjax.models.qwen2_5_vl import preset
from mmjax.models.qwen2_5_vl.params import abstract_params
from mmjax.jobs.plan import analytic, proposals, shapes
from mmjax.jobs.plan.options import PlanConfig
from mmjax.jobs.plan.planner import make_plan
from mmjax.train import optim

GRPO_PROGRAMS = ["rollout: encode image", "rollout: prefill", "rollout: decode", "reference log-probs",
                 "update: grads of one micro-batch", "update: optimizer step"]


def _recipe(name: str, arg: str | None = None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.fixture(scope="module")
def tiny_grpo_plan():
    config = _recipe("difficulty_grpo", "tiny")  # beta 0.001: the reference pass is planned too
    return make_plan(config, PlanConfig(), jax.devices()[:1], "gpu")


def test_tiny_grpo_plan_has_every_program_with_consistent_numbers(tiny_grpo_plan):
    plan = tiny_grpo_plan
    assert [p.name for p in plan.programs] == GRPO_PROGRAMS
    for p in plan.programs:
        assert not p.error, p
        assert p.argument_bytes > 0 and p.output_bytes > 0 and p.temp_bytes >= 0, p
        assert p.flops > 0 and p.compile_seconds > 0, p
        assert p.temp_bytes + p.argument_bytes <= p.peak_bytes, p
        assert p.held_bytes >= plan.arithmetic["params"]  # the params are on the device throughout
    assert plan.peak_bytes() == max(p.peak_bytes for p in plan.programs)
    assert plan.fits() and plan.usable_bytes == 0.75 * 80e9  # a GPU's default preallocation
    step = next(p for p in plan.programs if p.name == "update: optimizer step")
    # The optimizer step takes params, AdamW's moments and the gradients: 4 x the float32 params
    # (+ the step counters), and donates the first two.
    assert step.argument_bytes == pytest.approx(4 * plan.arithmetic["params"], rel=1e-3)
    assert step.alias_bytes == pytest.approx(3 * plan.arithmetic["params"], rel=1e-3)
    kinds = {c["what"].split(" (")[0]: c for c in plan.comparisons()}
    assert kinds["training state"]["ratio"] == pytest.approx(1.0, rel=1e-3)
    assert kinds["kv cache"]["ratio"] == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("recipe,programs", [
    ("sft", ["update: grads of one micro-batch", "update: optimizer step"]),
    ("difficulty_score", [f"{call}: {part}" for call in ("pism x1", "pism x2", "cmab")
                          for part in ("encode image", "prefill", "decode")])])
def test_sft_and_score_plans_have_their_jobs_programs(recipe, programs):
    config = _recipe(recipe, "tiny")
    plan = make_plan(config, build.dataclass_from(PlanConfig, config.plan, "plan"), jax.devices()[:1], "gpu")
    assert [p.name for p in plan.programs] == programs and not plan.failed()
    if recipe == "sft":  # SPEC 2.4 freezes the ViT and merger: AdamW keeps moments for the decoder only
        cfg = preset("tiny")
        assert plan.arithmetic["optimizer state"] == 8 * analytic.trainable_count(cfg, True, True)
    else:  # no optimizer: the params are all the job holds
        assert all(p.held == (("params", plan.arithmetic["params"]),) for p in plan.programs)


@pytest.mark.parametrize("name", ["tiny", "bench"])
def test_arithmetic_param_and_optimizer_bytes_are_the_real_pytrees(name):
    cfg = preset(name)
    params = abstract_params(cfg)
    assert analytic.param_count(cfg) == sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    for freeze in (False, True):
        opt = jax.eval_shape(optim.make_optimizer(optim.OptimizerConfig(freeze_vision=freeze,
                                                                        freeze_merger=freeze)).init, params)
        moments = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(opt) if x.ndim > 0)
        assert moments == analytic.ADAM_MOMENTS * 4 * analytic.trainable_count(cfg, freeze, freeze)


def test_worst_prompts_are_the_recipes_own_counts():
    spec_merge = 2
    video = _recipe("jigsaw_video").data  # the recipe: at most 6 clips x 6 patches of 2 frames x 128 = 4608
    p = shapes.worst_prompt(video, 256, spec_merge)
    assert len(p.videos) == 6 and p.vision_tokens() == 4608
    image = _recipe("jigsaw_image").data  # 3 x 3 tiles of at most 28 x 28 x 256 pixels: 256 tokens each
    p = shapes.worst_prompt(image, 256, spec_merge)
    assert len(p.images) == 9 and p.vision_tokens() == 9 * 256
    depth = _recipe("jigsaw_3d").data  # one frame of at most 1280 tokens
    assert shapes.worst_prompt(depth, 150, spec_merge).vision_tokens() == 1280
    qa = _recipe("difficulty_grpo").data  # 1280 tokens would pass max_prompt_length=1024: cut to fit
    p = shapes.worst_prompt(qa, 256, spec_merge)
    assert p.length() <= 1024 and p.length() > 1024 - 40  # the largest grid under the budget
    batch = shapes.prompt_batch(p, preset("7b").input_spec(max_pixels=qa.max_pixels), 2)
    assert batch["input_ids"].shape == (2, 1024) and batch["image"]["pixel_values"].shape[0] >= 4 * p.vision_tokens()


@pytest.mark.slow  # the job from the command line, two plans
def test_oversized_recipe_does_not_fit_and_the_proposal_planned_again_fits(tmp_path):
    """A tiny GRPO step on one device of 20 MB: the update's temporaries alone exceed it; the
    first proposal (FSDP over the 2 devices the plan is given) is planned again and fits."""
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "mmjax.main", "--config", "configs/difficulty_grpo.py:tiny",
           "--config.mode=plan", "--config.plan.devices=2", "--config.plan.device_memory_gb=0.02",
           "--config.plan.usable_fraction=1.0", f"--workdir={out}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "plan.json").read_text())
    assert not report["fits"] and report["peak_bytes"] > 0.02e9
    assert report["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1}
    tried = report["proposals"]
    assert tried and tried[-1]["fits"] and tried[-1]["peak_bytes"] <= 0.02e9
    # beta 0.001: the bfloat16 reference first (too little here), then FSDP over the 2 devices.
    assert [t["overrides"] for t in tried[:2]] == [{"model.frozen_dtype": "bfloat16"},
                                                   {"model.frozen_dtype": "bfloat16", "mesh.data": 1, "mesh.fsdp": 2}]
    assert tried[0]["peak_bytes"] < report["peak_bytes"] and tried[1]["mesh"]["fsdp"] == 2
    assert "does not fit" in run.stdout and "--config.mesh.fsdp=2" in (out / "plan.md").read_text()


def test_ladder_moves_fsdp_to_tensor_where_halving_would_split_prompts_unevenly():
    config = _recipe("difficulty_grpo")  # 7B, fsdp 8, 8 prompts, remat full already, beta 0.001
    rungs = [overrides for _, overrides in
             proposals.ladder(config, build.dataclass_from(PlanConfig, config.plan, "plan"), 8)]
    frozen = {"model.frozen_dtype": "bfloat16"}  # the reference copy first: it costs nothing
    assert rungs[:3] == [
        frozen, {**frozen, "mesh.fsdp": 4, "mesh.tensor": 2},
        {**frozen, "mesh.fsdp": 4, "mesh.tensor": 2, "data.batch_size": 4, "gradient_accumulation_steps": 2}]
    # The 7B's 4 KV heads stop tensor at 4, one prompt per fsdp shard stops the halving: then
    # each prompt's 8 completions are split into more update micro-batches.
    assert rungs[4]["mesh.tensor"] == 4 and rungs[4]["data.batch_size"] == 2
    assert [r.get("grpo.completion_chunks") for r in rungs[4:]] == [None, 2, 4, 8]


def test_proposed_memory_options_lower_the_planned_bytes(tiny_grpo_plan):
    """model.frozen_dtype=bfloat16 halves the reference params; completion_chunks=2 halves the
    update's completion rows (XLA's micro-batch inputs and the arithmetic's activations)."""
    config, base = _recipe("difficulty_grpo", "tiny"), tiny_grpo_plan
    less = make_plan(proposals.apply(config, {"model.frozen_dtype": "bfloat16", "grpo.completion_chunks": 2}),
                     PlanConfig(), jax.devices()[:1], "gpu")
    held = lambda plan, name: dict(next(p for p in plan.programs if p.name == name).held)  # noqa: E731
    update = "update: grads of one micro-batch"
    assert held(less, update)["reference params"] * 2 == held(base, update)["reference params"]
    assert less.arithmetic["reference params"] * 2 == base.arithmetic["reference params"]
    base_micro = next(p for p in base.programs if p.name == update).other_input_bytes
    less_micro = next(p for p in less.programs if p.name == update).other_input_bytes
    assert base_micro / 2 < less_micro < base_micro  # the completion rows halve, the prompts stay
    # The step's other micro-batch (one chunk) is held beside the one being differentiated.
    assert held(less, update)["the step's other micro-batches"] == less_micro
    assert less.arithmetic["activations"] < base.arithmetic["activations"]
    assert less.shape.completion_chunks == 2 and less.shape.completions == base.shape.completions


def test_attention_planned_for_a_gpu_uses_a_stand_in_on_this_host():
    q = jnp.ones((1, 128, 4, 128), jnp.bfloat16)
    kv = jnp.ones((1, 2, 128, 128), jnp.bfloat16)
    valid = jnp.ones((1, 128), bool)
    attention_lib.stand_ins.clear()
    with attention_lib.planning_target("gpu"):  # auto picks cudnn there; blockwise compiles here
        out, _ = attention_lib.attention(q, kv, kv, key_valid=valid, causal=True)
    assert attention_lib.stand_ins == {("cudnn", "blockwise")}
    want, _ = attention_lib.attention(q, kv, kv, key_valid=valid, causal=True, implementation="blockwise")
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(want, np.float32))
    attention_lib.stand_ins.clear()
    attention_lib.attention(q, kv, kv, key_valid=valid, causal=True)  # outside a plan: as before
    assert not attention_lib.stand_ins
