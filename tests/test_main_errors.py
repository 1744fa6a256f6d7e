"""Command-line mistakes are one line on stderr naming the file / field, never a traceback."""

import os
import subprocess
import sys

import ml_collections
import pytest

from mmjax import main as cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("args,expected", [
    (["--config", "configs/nope.py"], ["--config configs/nope.py: no such config file"]),
    (["--config", "configs/demo.py", "--config.nonexistent_field=1"],
     ["--config.nonexistent_field", "configs/demo.py has no field config.nonexistent_field", "'model'"]),
    (["--config", "configs/demo.py", "--config.model.dtype=float64"],
     ["config.model.dtype='float64' is not one of ['bfloat16', 'float32']"]),
    (["--config", "configs/jigsaw_image.py:nope"],
     ["configs/jigsaw_image.py: unknown config argument(s) ['nope']", "code:", "tpu:"]),
])
def test_cli_mistakes_are_one_line(tmp_path, args, expected):
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", *args, "--workdir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmjax.main: error: "), proc.stderr
    for text in expected:
        assert text in lines[0]


def test_validate_checks_registered_fields_only_where_present(monkeypatch):
    monkeypatch.setattr(cli, "CHOICES", dict(cli.CHOICES))
    cli.register_choices("train.optimizer", lambda: ("adamw", "sgd"))
    config = ml_collections.ConfigDict({"model": {"dtype": "bfloat16"}, "train": {"optimizer": "lion"}})
    with pytest.raises(ValueError, match=r"config\.train\.optimizer='lion' is not one of \['adamw', 'sgd'\]"):
        cli.validate(config)
    config.train.optimizer = "sgd"
    cli.validate(config)  # no `mode` field in this config: not checked
    config.model.dtype = "float16"
    with pytest.raises(ValueError, match=r"config\.model\.dtype='float16' is not one of \['bfloat16', 'float32'\]"):
        cli.validate(config)
