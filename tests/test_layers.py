"""The layers of DESIGN.md, as import-linter contracts in pyproject.toml ([tool.importlinter]):
processing < data, rewards, sharding < models < train < rl, difficulty, eval < jobs < main, sweep, with
the config and container modules as shared leaves. Any import pointing back up fails here."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_import_points_down_the_layers():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "mmjax layers point down KEPT" in proc.stdout


def test_the_contract_names_a_broken_arrow(tmp_path):
    """The same contract on a copy of the tree with one import pointing up is reported, naming it."""
    import shutil
    shutil.copytree(os.path.join(ROOT, "mmjax"), tmp_path / "mmjax")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    with open(tmp_path / "mmjax" / "train" / "weighted.py", "a") as f:
        f.write("\nfrom mmjax.rl import losses  # noqa: E402,F401  (train may not import rl)\n")
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([lint, "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "mmjax.train.weighted -> mmjax.rl.losses" in proc.stdout, proc.stdout[-3000:]
