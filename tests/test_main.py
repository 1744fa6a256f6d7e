"""The README's main job runs end to end from the command line."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_job_runs_and_its_hf_export_reloads_exactly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/demo.py",
                           "--workdir", str(tmp_path), "--config.sample.max_new_tokens=4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"generated [1-4] tokens", proc.stdout), proc.stdout
    assert "reloaded max |logit diff| = 0.00e+00" in proc.stdout, proc.stdout
    assert os.path.exists(tmp_path / "hf_export" / "model.safetensors")


def test_unknown_mode_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/demo.py",
                           "--workdir", str(tmp_path), "--config.mode=nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "config.mode='nope'" in proc.stderr
