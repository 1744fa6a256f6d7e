"""One config schema: the dataclasses are the only one (mmjax.config_schema, mmjax.jobs.recipe).

Each section of recipe.base() (and of the score / eval / demo sections) is made from the
dataclass the job turns it into, so every default, help line and allowed set is written once;
allowed values are checked by one function, for a ConfigDict (mmjax.main, before anything
loads) and for a dataclass built in code alike.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import ml_collections
import pytest

from mmjax import config_schema
from mmjax.config_help import choice_error, help_text
from mmjax.jobs import build, recipe

MODES = ("", *recipe.MODES)


def _node(config, path: str):
    found, value = config_schema._get(config, path)
    assert found, path
    return value


# ---- each section equals its dataclass's defaults ----------------------------------------------

def test_base_sections_build_their_dataclasses_default_instances():
    from mmjax.data.adaptive_jigsaw import AdaptiveConfig
    from mmjax.difficulty.online_state import OnlineConfig
    from mmjax.difficulty.selection import SelectionConfig
    from mmjax.rl.grpo import GRPOConfig
    from mmjax.train.optim import OptimizerConfig
    c = recipe.base()
    for path, cls in [("grpo", GRPOConfig), ("optim", OptimizerConfig), ("data.selection", SelectionConfig),
                      ("data.online", OnlineConfig), ("data.adaptive", AdaptiveConfig),
                      ("model", recipe.ModelOptions), ("mesh", recipe.MeshConfig), ("sample", recipe.SampleConfig),
                      ("sft", recipe.SftOptions), ("rewards", recipe.RewardsConfig)]:
        assert cls(**_node(c, path).to_dict()) == cls(), path  # every field there, each at its default
    from mmjax.rl.objective import RolloutConfig
    from mmjax.train.trainer import TrainConfig
    for cls in (recipe.RunOptions, TrainConfig, RolloutConfig):  # the top-level fields
        names = [f.name for f in dataclasses.fields(cls) if f.name != "allowed_token_ids"]  # from config.sample
        assert cls(**{n: c[n] for n in names}) == cls()
    data = {k: v for k, v in c.data.to_dict().items() if k not in ("selection", "online", "adaptive")}
    assert recipe.DataConfig(**data) == recipe.DataConfig()
    # Nothing else: the base config is exactly the schema's fields.
    assert config_schema.unknown_fields(c, recipe.schema()) == []
    assert {i.path for i in recipe.schema().fields()} == set(config_schema._leaf_paths(c, set(
        i.path for i in recipe.schema().fields())))


def test_mode_sections_build_their_dataclasses_default_instances():
    from mmjax.difficulty.cmab import CmabConfig
    from mmjax.difficulty.pism import PismLevels
    from mmjax.difficulty.scoring import ScoreConfig
    from mmjax.eval.benchmarks import ReadOptions
    from mmjax.eval.metrics import ScoreOptions
    from mmjax.eval.runner import RunnerConfig
    c = recipe.base()
    c.mode, c.score = "score", recipe.mode_section("score", "score")
    assert build.score_configs(c) == (ScoreConfig(), PismLevels(), CmabConfig(), build.ScoreJobOptions())
    c.mode, c.eval = "eval", recipe.mode_section("eval", "eval")
    assert build.eval_read_options(c) == ReadOptions()
    assert build.eval_score_options(c) == ScoreOptions()
    # min_vision_rows and bucket_lengths come from config.data; the rest is the eval section's
    assert build.eval_runner_config(c) == RunnerConfig(min_vision_rows=c.data.min_vision_rows)
    assert recipe.mode_section("demo", "eval").to_dict() == dataclasses.asdict(recipe.DemoEval())


def test_no_default_is_written_twice():
    """base() is generated: it sets no field itself, and the defaults borrowed from the data
    pipeline's dataclasses are theirs (one place each)."""
    source = inspect.getsource(recipe.base)
    assert not re.search(r"\bc\.\w+(\.\w+)* = ", source), source
    from mmjax.data.video_jigsaw import VideoJigsaw
    infos = {i.path: i for i in recipe.schema().fields()}
    assert infos["data.video_clips"].default_from == "mmjax.data.video_jigsaw.VideoJigsaw.num_clips"
    assert infos["data.video_clips"].default == VideoJigsaw.num_clips
    assert infos["grpo.num_generations"].source == "mmjax.rl.grpo.GRPOConfig"


@pytest.mark.parametrize("mode", MODES)
def test_every_field_has_help_and_a_default_inside_its_choices(mode):
    for info in recipe.schema(mode).fields():
        assert info.help and "\n" not in info.help, info.path
        allowed = info.allowed()
        if allowed is not None:
            assert choice_error(info.path, info.default, info.choices) is None, (info.path, info.default, allowed)


# ---- allowed values: one check ----------------------------------------------------------------

def test_choice_error_is_one_line_naming_the_field_and_the_allowed_values():
    assert choice_error("loss_type", "dapo", ("grpo", "dapo")) is None
    assert choice_error("loss_type", "x", ("grpo", "dapo")) == "loss_type='x': expected one of ('dapo', 'grpo')"
    assert choice_error("scale_rewards", True, ("group", "none")) is not None  # True is not a name
    assert choice_error("methods", ("pism", "x"), lambda: ("pism", "cmab")) == \
        "methods=('pism', 'x'): 'x' is not one of ('cmab', 'pism')"
    assert choice_error("anything", 3, None) is None


def test_the_dataclasses_check_their_choices_with_the_same_function():
    from mmjax.difficulty.cmab import CmabConfig
    from mmjax.difficulty.scoring import ScoreConfig
    from mmjax.rl.grpo import GRPOConfig
    from mmjax.train.optim import OptimizerConfig
    for make, match in [(lambda: GRPOConfig(loss_type="x"), r"loss_type='x': expected one of \('bnpo', "),
                        (lambda: GRPOConfig(kl_estimator="kl"), r"kl_estimator='kl': expected one of \('k1', "),
                        (lambda: OptimizerConfig(schedule="step"), r"schedule='step': expected one of \("),
                        (lambda: ScoreConfig(mask_mode="x"), r"mask_mode='x': expected one of \("),
                        (lambda: ScoreConfig(methods=("pism", "x")), r"methods=\('pism', 'x'\): 'x' is not one of"),
                        (lambda: CmabConfig(definition="x"), r"definition='x': expected one of \('code', 'paper'\)"),
                        (lambda: CmabConfig(mode="x"), r"mode='x': expected one of \('fixed', 'quantile'\)")]:
        with pytest.raises(ValueError, match=match):
            make()


def test_check_names_every_field_outside_its_choices_and_skips_absent_ones():
    c = recipe.base()
    assert recipe.check(c) == []
    c.model.dtype, c.grpo.loss_type, c.data.source = "float64", "x", "nope"
    errors = recipe.check(c)
    assert errors[0] == "config.model.dtype='float64': expected one of ('bfloat16', 'float32')"
    assert errors[1].startswith("config.data.source='nope': expected one of ('colour_choice', ")
    assert errors[2].startswith("config.grpo.loss_type='x': expected one of (")
    del c.grpo  # a recipe without a section: its fields are not checked
    c.model.dtype, c.data.source = "float32", "jsonl"
    assert recipe.check(c) == []


def test_a_choice_of_a_mode_section_is_checked_in_that_mode_only():
    c = recipe.base()
    c.mode, c.score = "score", recipe.mode_section("score", "score")
    c.score.cmab.definition = "papr"
    assert recipe.check(c) == ["config.score.cmab.definition='papr': expected one of ('code', 'paper')"]


# ---- the ConfigDict the helper makes -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Demo:
    name: str = dataclasses.field(default="a", metadata=help_text("a name", choices=("a", "b")))
    clip: float | None = dataclasses.field(default=None, metadata=help_text("None = off"))
    mix: tuple[float, ...] | None = dataclasses.field(default=None, metadata=help_text("shares"))
    sizes: tuple = dataclasses.field(default_factory=lambda: (1, 2), metadata=help_text("sizes"))
    table: dict = dataclasses.field(default_factory=lambda: {"x": 1.0}, metadata=help_text("open keys"))


@dataclasses.dataclass(frozen=True)
class _Other:
    name: str = "a"
    extra: int = 0


def test_a_section_is_its_dataclass_fields_defaults_and_help():
    s = config_schema.section(_Demo, child=config_schema.section(_Other, exclude=("name",)))
    c = s.build()
    assert c.name == "a" and c.clip is None and c.mix is None and c.sizes == (1, 2)
    assert c.child.to_dict() == {"extra": 0}
    assert isinstance(c.table, ml_collections.ConfigDict) and c.table.x == 1.0
    c.clip = 0.5  # a None default is a typed reference: it takes a float, as --config.x.clip=0.5 does
    c.mix = (1.0, 2.0)
    with pytest.raises(TypeError):
        c.clip = "high"
    infos = {i.path: i for i in s.fields("top")}
    assert infos["top.name"].help == "a name" and infos["top.name"].allowed() == ("a", "b")
    assert infos["top.child.extra"].source.endswith("test_config_schema._Other")
    assert config_schema.check(ml_collections.ConfigDict({"name": "c"}), s) == [
        "config.name='c': expected one of ('a', 'b')"]


def test_two_classes_may_share_a_field_only_with_one_default():
    @dataclasses.dataclass(frozen=True)
    class Clash:
        name: str = "b"
    config_schema.section(_Demo, _Other).build()  # both say "a": one field
    with pytest.raises(ValueError, match="name has two defaults: 'a' in .*_Demo and 'b' in .*Clash"):
        config_schema.section(_Demo, Clash).build()


def test_close_keys_find_a_mistyped_or_misplaced_field():
    c = recipe.base()
    assert config_schema.close_keys(c, "grpo.num_generaitons")[0] == "grpo.num_generations"
    assert config_schema.close_keys(c, "num_generations")[0] == "grpo.num_generations"
    assert config_schema.close_keys(c, "optim.learnig_rate")[0] == "optim.learning_rate"
    assert config_schema.close_keys(c, "zzz_qqq") == []


def test_describe_lists_value_default_choices_help_and_source():
    c = recipe.base()
    c.grpo.num_generations = 16
    lines = config_schema.describe(c, recipe.schema(), title="base")
    line = next(x for x in lines if " grpo.num_generations = " in x)
    assert line.startswith("* grpo.num_generations = 16  (default 8)  G, completions sampled per prompt; TRL default 8")
    assert line.endswith("[mmjax.rl.grpo.GRPOConfig]")
    line = next(x for x in lines if " grpo.loss_type = " in x)
    assert line.startswith("  grpo.loss_type = 'dapo'  (default 'dapo'; one of 'bnpo' | 'dapo' | 'dr_grpo' | 'grpo')")
    assert len(lines) == 1 + len(list(recipe.schema().fields()))
    c.my_own = 3  # a recipe's field no dataclass describes is listed as such
    assert config_schema.describe(c, recipe.schema())[-1].startswith("? my_own = 3  (not in the schema")
