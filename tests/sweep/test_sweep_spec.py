"""A sweep as data: the grid helpers, `{run}` placeholders, the implied dependencies and the order
runs start in (mmjax.sweep.spec, placeholders, graph, plan). Nothing is loaded or run here."""

import dataclasses
import os
import shlex

import numpy as np
import pytest

from mmjax import sweep
from mmjax.sweep import graph, placeholders, plan
from mmjax.sweep.spec import Run, SweepError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _contents(runs):
    return [(r.name, dict(r.overrides)) for r in runs]


def test_product_is_every_combination_named_from_values_or_labels():
    runs = sweep.product(optim__learning_rate=(1e-3, 3e-3), **{"grpo.num_generations": {"g4": 4, "g8": 8}})
    assert _contents(runs) == [
        ("learning_rate=0.001_g4", {"optim.learning_rate": 1e-3, "grpo.num_generations": 4}),
        ("learning_rate=0.001_g8", {"optim.learning_rate": 1e-3, "grpo.num_generations": 8}),
        ("learning_rate=0.003_g4", {"optim.learning_rate": 3e-3, "grpo.num_generations": 4}),
        ("learning_rate=0.003_g8", {"optim.learning_rate": 3e-3, "grpo.num_generations": 8}),
    ]
    assert all(r.after == () and r.config == "" for r in runs)


def test_zip_pairs_values_and_chain_concatenates():
    runs = sweep.zip(seed=(0, 1), **{"data.path": ("/a/x.jsonl", "/b/y z.jsonl")})
    assert _contents(runs) == [("seed=0_path=a-x.jsonl", {"seed": 0, "data.path": "/a/x.jsonl"}),
                               ("seed=1_path=b-y-z.jsonl", {"seed": 1, "data.path": "/b/y z.jsonl"})]
    with pytest.raises(SweepError, match=r"different lengths \[2, 3\]"):
        sweep.zip_(seed=(0, 1), max_steps=(1, 2, 3))
    both = sweep.chain([Run("score")], sweep.product(seed={"s0": 0, "s1": 1}))
    assert [r.name for r in both] == ["score", "s0", "s1"]
    with pytest.raises(SweepError, match="runs named twice: s0"):
        sweep.chain(sweep.product(seed={"s0": 0}), [Run("s0")])


def test_sweeps_nest_and_each_adds_prefix_recipe_dependencies_and_fixed_overrides():
    grid = sweep.product(sweep.zip(seed={"s0": 0, "s1": 1}, max_steps={"short": 5, "long": 50}),
                         optim__learning_rate={"lr1": 1e-6})
    assert _contents(grid) == [("s0_short_lr1", {"seed": 0, "max_steps": 5, "optim.learning_rate": 1e-6}),
                               ("s1_long_lr1", {"seed": 1, "max_steps": 50, "optim.learning_rate": 1e-6})]
    staged = sweep.each(grid, prefix="grpo", config="configs/demo.py", after="sft",
                        overrides={"init_from": "{sft}"})
    assert [r.name for r in staged] == ["grpo_s0_short_lr1", "grpo_s1_long_lr1"]
    assert all(r.config == "configs/demo.py" and r.after == ("sft",) and r.overrides["init_from"] == "{sft}"
               for r in staged)
    with pytest.raises(SweepError, match="seed is set twice"):
        sweep.each(grid, overrides={"seed": 7})


def test_a_run_is_frozen_and_checked():
    run = Run("a", {"config.max_steps": 2}, after=["x", "x"])
    assert dict(run.overrides) == {"max_steps": 2} and run.after == ("x",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.name = "b"
    with pytest.raises(TypeError):
        run.overrides["seed"] = 1
    with pytest.raises(SweepError, match="run name 'a/b'"):
        Run("a/b")


def test_placeholders_name_runs_and_resolve_to_their_workdirs():
    value = ("{score}/scores.parquet", ["{sft}"], {"k": "{score}"}, "{{literal}}", 3)
    assert placeholders.names_in(value) == ["score", "sft"]
    resolved = placeholders.resolve(value, lambda n: f"/W/runs/{n}")
    assert resolved == ("/W/runs/score/scores.parquet", ["/W/runs/sft"], {"k": "/W/runs/score"}, "{literal}", 3)
    for bad in ("{a!r}", "{a:>4}", "{}", "a{b"):
        with pytest.raises(SweepError):
            placeholders.names_in(bad)


def test_a_placeholder_implies_a_dependency_and_the_order_follows_dependencies(tmp_path):
    runs = [Run("grpo", {"init_from": "{sft}", "data.selection.score_file": "{score}/scores.parquet"}),
            Run("eval", {"init_from": "{grpo}"}, after=("sft",)),
            Run("sft", after="score"),
            Run("score")]
    planned = plan.plan(runs, "configs/demo.py", str(tmp_path), python="python")
    assert [p.name for p in planned] == ["score", "sft", "grpo", "eval"]
    by = {p.name: p for p in planned}
    assert by["grpo"].needs == ("sft", "score") and by["eval"].needs == ("sft", "grpo")
    assert by["grpo"].workdir == str(tmp_path / "runs" / "grpo")
    assert by["grpo"].command == ("python", "-m", "mmjax.main", "--config", "configs/demo.py", "--workdir",
                                  by["grpo"].workdir, f"--config.init_from={tmp_path}/runs/sft",
                                  f"--config.data.selection.score_file={tmp_path}/runs/score/scores.parquet")


def test_cycles_and_unknown_runs_are_errors_naming_them(tmp_path):
    with pytest.raises(SweepError, match=r"dependency cycle: b -> c -> b"):
        plan.plan([Run("a"), Run("b", after="c"), Run("c", {"init_from": "{b}"}, after="a")], "x.py", str(tmp_path))
    with pytest.raises(SweepError, match=r"run b depends on 'scroe', which is no run of this sweep "
                                         r"\(did you mean score\?\)"):
        plan.plan([Run("score"), Run("b", after="scroe")], "x.py", str(tmp_path))
    with pytest.raises(SweepError, match=r"run b: \{sft\} in init_from='\{sft\}' names no run"):
        plan.plan([Run("a"), Run("b", {"init_from": "{sft}"})], "x.py", str(tmp_path))
    with pytest.raises(SweepError, match="a -> a"):  # a self-dependency is a cycle too
        graph.order({"a": ("a",)})


def test_override_values_go_through_the_command_line_unchanged():
    """Each value, written as a flag, parses back to itself in the recipe (as mmjax.main parses it)."""
    from mmjax.sweep import check
    values = {"optim.learning_rate": np.float64(3e-4), "max_steps": np.int64(7), "sample.allow_eos": True,
              "data.image_size": (28, 28), "init_from": "/a b/c", "rewards.weights": {"accuracy_choice": 0.5},
              "optim.weight_decay": 0.0}
    flags = [plan.flag(k, v) for k, v in values.items()]
    assert shlex.split(shlex.join(flags)) == flags
    config = check.parse(os.path.join(ROOT, "configs", "demo.py"), flags)
    for key, value in values.items():
        got = config
        for part in key.split("."):
            got = got[part]
        got = got.to_dict() if hasattr(got, "to_dict") else got
        assert got == value and type(got) is type(value.item() if hasattr(value, "item") else value), key
