"""The README's main job: GRPO on CPU from the command line visibly learns, and exports to HF."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/demo.py:quick",
                           "--workdir", str(workdir)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow  # the demo job from the CLI: 100 GRPO steps
def test_demo_grpo_learns_from_the_images(demo_run):
    workdir, proc = demo_run
    summary = json.load(open(workdir / "report" / "summary.json"))
    chance = summary["chance"]
    assert chance == 0.25
    # The mean reward of the last 20 logged steps is at least twice the first 20's and far
    # above chance; held-out greedy accuracy beats the initial policy; blank images do not.
    assert summary["last_mean_reward"] >= 2 * summary["first_mean_reward"], summary
    assert summary["last_mean_reward"] >= chance + 0.3, summary
    assert summary["after"]["images"] >= summary["before"]["images"] + 0.25, summary
    assert summary["after"]["blank"] <= summary["after"]["images"] - 0.3, summary
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert len(rows) == summary["steps"] == 100
    assert os.path.getsize(workdir / "report" / "reward_curve.png") > 1000
    assert "held-out greedy accuracy" in open(workdir / "report" / "summary.md").read()
    assert "reloads bit-exactly" in proc.stdout
    assert json.load(open(workdir / "config.json"))["mode"] == "demo"


@pytest.mark.slow  # the demo job from the CLI: 100 GRPO steps
def test_demo_export_loads_in_transformers_with_the_same_logits(demo_run):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    import mmjax.models.qwen2_5_vl as qwen
    workdir, _ = demo_run
    out = str(workdir / "hf_export")
    hf_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager").eval()
    ours = qwen.load_hf(out, progress=False)
    ids = np.array([[5, 17, 33, 90, 2, 41]])
    with torch.no_grad():
        ref = hf_model(input_ids=torch.from_numpy(ids), mm_token_type_ids=torch.zeros_like(torch.from_numpy(ids))
                       ).logits.numpy()
    np.testing.assert_allclose(ours.logits(ids), ref, atol=1e-4)


@pytest.mark.slow  # a CLI subprocess
def test_unknown_mode_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/demo.py",
                           "--workdir", str(tmp_path), "--config.mode=nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "config.mode='nope'" in proc.stderr


@pytest.mark.slow  # a CLI subprocess
def test_help_config_prints_every_field_and_runs_nothing(tmp_path):
    """--help_config: each field's value, default, allowed values, help and source; exit 0, no job."""
    from mmjax.jobs import recipe
    workdir = tmp_path / "w"
    proc = subprocess.run([sys.executable, "-m", "mmjax.main", "--config", "configs/jigsaw_image.py:tiny",
                           "--config.grpo.loss_type=grpo", "--workdir", str(workdir), "--help_config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not workdir.exists()  # nothing ran
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("--config configs/jigsaw_image.py:tiny: ")
    fields = {line[2:].split(" = ")[0]: line for line in lines[1:]}
    c = recipe.schema("grpo")
    assert set(fields) == {info.path for info in c.fields()}  # every field, none left out
    # The recipe's value (tiny's G = 2), the dataclass default, the help with its sources, the class.
    assert fields["grpo.num_generations"] == (
        "* grpo.num_generations = 2  (default 8)  G, completions sampled per prompt; TRL default 8, SPEC 2.4 8, "
        "SPEC 1.6 16  [mmjax.rl.grpo.GRPOConfig]")
    assert fields["grpo.loss_type"].startswith(  # the command line's value, and the allowed ones
        "* grpo.loss_type = 'grpo'  (default 'dapo'; one of 'bnpo' | 'dapo' | 'dr_grpo' | 'grpo')  grpo | bnpo")
    assert fields["grpo.delta"].startswith("* grpo.delta = 3.0  (default None)  dual-clip c")  # SPEC 1.6
    assert fields["data.video_clips"].endswith("[mmjax.data.video_jigsaw.VideoJigsaw.num_clips]")
    assert fields["seed"].startswith("  seed = 0  (default 0)  params init")
