"""Command-line mistakes are one line on stderr naming the file / field, never a traceback."""

import os

import cli_batch
import ml_collections
import pytest

from mmjax import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTHING_BUILT = True  # run as tests/nothing_built.py's `command`: builders refused

MISTAKES = [
    (["--config", "configs/nope.py"], ["--config configs/nope.py: no such config file"]),
    (["--config", "configs/demo.py", "--config.nonexistent_field=1"],
     ["--config.nonexistent_field", "configs/demo.py has no field config.nonexistent_field", "'model'"]),
    (["--config", "configs/demo.py", "--config.model.dtype=float64"],
     ["config.model.dtype='float64': expected one of ('bfloat16', 'float32')"]),
    (["--config", "configs/jigsaw_image.py:nope"],
     ["configs/jigsaw_image.py: unknown config argument(s) ['nope']", "code:", "tpu:", "tiny:", "steps:"]),
    (["--config", "configs/jigsaw_image.py:tiny,steps=many"],
     ["configs/jigsaw_image.py: config argument steps='many' is not an int (default 0)"]),
    # Allowed values come from the fields' dataclasses (mmjax.jobs.recipe.schema), all in one line:
    (["--config", "configs/difficulty_score.py", "--config.grpo.loss_type=token-mean",
      "--config.score.mask_mode=circles", "--config.data.source=csv"],
     ["config.data.source='csv': expected one of ('colour_choice', ", "; config.grpo.loss_type='token-mean': "
      "expected one of ('bnpo', 'dapo', 'dr_grpo', 'grpo'); config.score.mask_mode='circles': expected one of "
      "('patches', 'pixels', 'rectangle')"]),
]

MISTYPED_OVERRIDES = [
    ("--config.grpo.num_generaitons=8", "did you mean config.grpo.num_generations"),
    ("--config.num_generations=8", "did you mean config.grpo.num_generations"),  # its section left out
    ("--config.optim.learnig_rate=1e-5", "did you mean config.optim.learning_rate"),
    ("--config.data.selection.treshold_mode=value", "did you mean config.data.selection.threshold_mode"),
]

MISSING_INPUTS = [
    (["--config.data.source=jsonl", "--config.data.path={missing}/train.jsonl"],
     "config.data.path='{missing}/train.jsonl': no such file"),
    (["--config.model.hf_dir={missing}/Qwen2.5-VL-7B-Instruct"],
     "config.model.hf_dir='{missing}/Qwen2.5-VL-7B-Instruct': no such directory"),
    (["--config.init_from={missing}/sft_run"], "config.init_from='{missing}/sft_run': no such directory"),
    (["--config.data.selection.score_file={missing}/scores.parquet"],
     "config.data.selection.score_file='{missing}/scores.parquet': no such file or directory"),
]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Every CLI run of this file's tests, all from one interpreter start (tests/cli_batch.py: a
    fresh `python -m mmjax.main` each, ~2 s of imports fewer): {case: (that case's own tmp
    folder, [the CompletedProcess-like result of each of its runs, in order])}."""
    cases = {}  # case -> (tmp folder, [(args, nothing_built)])
    for args, _ in MISTAKES:
        tmp = tmp_path_factory.mktemp("mistake")
        cases["mistake", *args] = tmp, [([*args, "--workdir", str(tmp)], False)]
    for override, _ in MISTYPED_OVERRIDES:
        tmp = tmp_path_factory.mktemp("mistyped")
        cases["mistyped", override] = tmp, [
            (["--config", "configs/jigsaw_image.py:tiny", override, "--workdir", str(tmp / "w")], NOTHING_BUILT)]
    tmp = tmp_path_factory.mktemp("workdir_file")
    workdir = tmp / "w"
    workdir.write_text("not a folder")
    cases["workdir_file"] = tmp, [(["--config", "configs/demo.py", "--workdir", str(workdir)], NOTHING_BUILT),
                                  (["--config", "configs/demo.py", "--workdir", str(workdir / "run")], NOTHING_BUILT)]
    for overrides, _ in MISSING_INPUTS:
        tmp = tmp_path_factory.mktemp("missing_input")
        args = ["--config", "configs/demo.py", *(o.format(missing=tmp / "missing") for o in overrides)]
        cases["missing_input", *overrides] = tmp, [([*args, "--workdir", str(tmp / "w")], NOTHING_BUILT)]
    tmp = tmp_path_factory.mktemp("benchmark")
    cases["benchmark"] = tmp, [(["--config", "configs/eval.py:tiny",
                                 "--config.eval.benchmarks.mmstar=nope/mmstar.jsonl", "--workdir", str(tmp / "w")],
                                NOTHING_BUILT)]
    results = iter(cli_batch.run_many([run for _, runs in cases.values() for run in runs], cwd=ROOT, timeout=300))
    return {case: (tmp, [next(results) for _ in runs]) for case, (tmp, runs) in cases.items()}


@pytest.mark.parametrize("args,expected", MISTAKES)
@pytest.mark.slow  # CLI runs (cli_runs)
def test_cli_mistakes_are_one_line(cli_runs, args, expected):
    _, [proc] = cli_runs["mistake", *args]  # python -m mmjax.main ARGS --workdir <its tmp folder>
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmjax.main: error: "), proc.stderr
    for text in expected:
        assert text in lines[0]


def test_validate_checks_the_schemas_fields_only_where_present():
    config = ml_collections.ConfigDict({"model": {"dtype": "bfloat16"}, "optim": {"schedule": "step"}})
    with pytest.raises(ValueError, match=r"^config\.optim\.schedule='step': expected one of "
                                         r"\('constant', 'cosine', 'linear'\)$"):
        cli.validate(config)
    config.optim.schedule = "cosine"
    cli.validate(config)  # no `mode` field (nor most sections) in this config: not checked
    config.model.dtype = "float16"
    with pytest.raises(ValueError, match=r"config\.model\.dtype='float16': expected one of \('bfloat16', 'float32'\)"):
        cli.validate(config)


@pytest.mark.parametrize("override,closest", MISTYPED_OVERRIDES)
@pytest.mark.slow  # CLI runs (cli_runs)
def test_a_mistyped_override_names_the_closest_fields_before_anything_loads(cli_runs, override, closest):
    tmp_path, [proc] = cli_runs["mistyped", override]  # ran: --config configs/jigsaw_image.py:tiny OVERRIDE
    workdir = tmp_path / "w"
    line = _error_line(proc)
    key = override[2:].split("=")[0]
    assert line.startswith(f"mmjax.main: error: --{key}: configs/jigsaw_image.py has no field {key}"), line
    assert closest in line, line
    assert not workdir.exists()


# ---- input paths are checked before anything is built (mmjax.jobs.preflight) ------------------

def _error_line(proc) -> str:
    """A CLI run's result (cli_runs: through tests/nothing_built.py); assert exit 2 with one error
    line, no traceback and nothing built; the line."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmjax.main: error: "), proc.stderr
    return lines[0]


@pytest.mark.slow  # CLI runs (cli_runs)
def test_a_workdir_that_is_a_file_is_one_line(cli_runs):
    # cli_runs wrote "not a folder" to <tmp>/w, then ran --config configs/demo.py with --workdir
    # <tmp>/w and with --workdir <tmp>/w/run
    tmp_path, [in_file, under_file] = cli_runs["workdir_file"]
    workdir = tmp_path / "w"
    line = _error_line(in_file)
    assert line.endswith(f"--workdir {workdir}: exists and is not a directory")
    line = _error_line(under_file)
    assert line.endswith(f"--workdir {workdir / 'run'}: {workdir} is not a directory")


@pytest.mark.parametrize("overrides,expected", MISSING_INPUTS)
@pytest.mark.slow  # CLI runs (cli_runs)
def test_a_missing_input_fails_fast_naming_the_field(cli_runs, overrides, expected):
    # ran: --config configs/demo.py OVERRIDES (formatted with missing) --workdir <tmp>/w
    tmp_path, [proc] = cli_runs["missing_input", *overrides]
    missing = tmp_path / "missing"
    workdir = tmp_path / "w"
    line = _error_line(proc)
    assert expected.format(missing=missing) in line, line
    assert not workdir.exists()  # refused before the workdir was made (_error_line: and before any model)


@pytest.mark.slow  # CLI runs (cli_runs)
def test_a_missing_benchmark_file_is_one_line(cli_runs):
    # ran: --config configs/eval.py:tiny --config.eval.benchmarks.mmstar=nope/mmstar.jsonl --workdir <tmp>/w
    _, [proc] = cli_runs["benchmark"]
    line = _error_line(proc)
    assert f"config.eval.benchmarks.mmstar='nope/mmstar.jsonl': no such file (relative to {ROOT})" in line


def _config(**fields):
    """recipe.base() with `fields` set: data__path="x" sets config.data.path = "x"."""
    from mmjax.jobs import recipe
    config = recipe.base()
    for name, value in fields.items():
        *parents, key = name.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[key] = value
    return config


def test_preflight_checks_the_kind_of_each_path(tmp_path):
    from mmjax.jobs import preflight
    a_file, a_dir = tmp_path / "rows.jsonl", tmp_path / "images"
    a_file.write_text("{}\n")
    a_dir.mkdir()
    workdir = str(tmp_path / "w")
    cases = [
        (dict(data__source="jsonl", data__path=str(a_dir)),
         f"config.data.path={str(a_dir)!r} is a directory, not a file"),
        (dict(data__source="image_folder", data__path=str(a_file)),
         f"config.data.path={str(a_file)!r} is a file, not a directory"),
        (dict(data__source="parquet"), "config.data.source='parquet' needs config.data.path"),
        (dict(data__data_root=str(tmp_path / "nope")), "config.data.data_root="),
        (dict(data__selection__score_file=str(a_dir)), f"{str(a_dir)!r}: a folder without scores.parquet"),
    ]
    for fields, expected in cases:
        with pytest.raises(preflight.PreflightError) as err:
            preflight.check_inputs(_config(**fields), workdir)
        assert expected in str(err.value), (fields, str(err.value))
    for fields in (dict(data__source="jsonl", data__path=str(a_file)),
                   dict(data__source="rgbd_folder", data__path=str(a_dir)),
                   dict(data__source="image_folder", data__path=str(a_dir)), dict(data__source="colour_choice")):
        preflight.check_inputs(_config(**fields), workdir)  # all there


def test_preflight_skips_the_inputs_a_mode_does_not_read(tmp_path):
    from mmjax.jobs import preflight
    missing = str(tmp_path / "missing")
    # score rates every row (no selection); eval reads benchmark files, not config.data.
    preflight.check_inputs(_config(mode="score", data__selection__score_file=missing), str(tmp_path))
    preflight.check_inputs(_config(mode="eval", data__source="jsonl", data__path=missing), str(tmp_path))
    with pytest.raises(preflight.PreflightError, match="config.model.hf_dir"):
        preflight.check_inputs(_config(mode="eval", model__hf_dir=missing), str(tmp_path))


def test_preflight_knows_every_source_and_the_score_file_name():
    from mmjax.difficulty import score_file
    from mmjax.jobs import preflight, build
    assert set(preflight.PATH_KINDS) | set(build.SYNTHETIC_SOURCES) == set(build.SOURCES)  # these read no path
    assert not set(preflight.PATH_KINDS) & set(build.SYNTHETIC_SOURCES)
    assert preflight.SCORES == score_file.SCORES
