"""LoRA in the one loop (issue 25): GRPO and SFT train the adapters alone on the frozen base, the
reference policy is the base itself, checkpoints hold the adapters and their optimizer state only,
and the trained model is the merged one. (A SIGKILLed LoRA run resumes bit for bit: test_kill_resume.py.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_config
from mmjax.jobs import build
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import sft as sft_job
from mmjax.models import lora
from mmjax.train import checkpoints

OPTIONS = {"mode": "grpo", "max_steps": 3, "save_steps": 1, "data.batch_size": 4, "grpo.num_generations": 4,
           "grpo.beta": 0.04, "lora.rank": 4, "lora.alpha": 8.0, "optim.learning_rate": 0.05}


def _config(**overrides):
    c = demo_config.get_config()
    c.update_from_flattened_dict({**OPTIONS, **overrides})
    return c


def _leaf_names(tree) -> set[str]:
    return {str(path[-1].key) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.slow  # a short GRPO run
def test_grpo_trains_the_adapters_alone(tmp_path):
    unbroken = tmp_path / "unbroken"
    trainer = grpo_job.build_trainer(_config(), str(unbroken))
    base = jax.tree.map(np.asarray, trainer.model.params)
    trainer.train()
    assert trainer.objective.ref_params is trainer.base  # the reference is the base: no second copy
    state = checkpoints.restore_latest(str(unbroken))
    assert state.step == 3 and _leaf_names(state.params) == {"kernel_lora_a", "kernel_lora_b"}
    moments = [a for a in jax.tree.leaves(state.opt_state) if getattr(a, "ndim", 0) == 2]
    assert moments and all(min(a.shape) == 4 for a in moments)  # Adam's moments: adapter-shaped only
    for a, b in zip(jax.tree.leaves(trainer.base), jax.tree.leaves(base)):
        np.testing.assert_array_equal(np.asarray(a), b)  # the base never moved
    rows = [json.loads(line) for line in (unbroken / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0  # the adapters move the policy off the base
    for a, b in zip(jax.tree.leaves(trainer.adapters), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), b)  # the checkpoint holds the trained adapters
    # The trained model is the base with the adapters folded in (what the HF export writes). The restored
    # adapters are numpy arrays: folded in by XLA, as the trainer does (numpy's matmul rounds otherwise).
    merged = lora.merged(trainer.base, jax.tree.map(jnp.asarray, state.params), trainer.lora)
    for a, b in zip(jax.tree.leaves(trainer.model.params), jax.tree.leaves(merged)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # Resume from a SIGKILL: tests/rl/test_kill_resume.py (a LoRA jigsaw run, bit for bit).

    with pytest.raises(build.ConfigFieldError, match="adapters only"):
        build.model(_config(init_from=str(unbroken), **{"lora.rank": 0}), build.tokenizer(_config()))


def test_sft_with_lora_lowers_the_loss_on_the_adapters(tmp_path):
    c = _config(mode="sft", max_steps=6, save_steps=6, **{"sft.num_epochs": 0, "optim.learning_rate": 0.01,
                                                          "data.batch_size": 8})
    trainer = sft_job.build_trainer(c, str(tmp_path))
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"], [r["loss"] for r in rows]
    assert _leaf_names(checkpoints.restore_latest(str(tmp_path)).params) == {"kernel_lora_a", "kernel_lora_b"}


@pytest.mark.slow  # an SFT job end to end, then transformers and peft load its exports
def test_the_merged_export_and_the_peft_export_load_with_the_same_logits(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import Qwen2_5_VLForConditionalGeneration

    from mmjax.models import lora as lora_lib
    from oracle import hf_logits
    c = _config(mode="sft", max_steps=4, save_steps=4, **{"sft.num_epochs": 0, "optim.learning_rate": 0.01})
    (tmp_path / "run").mkdir()  # mmjax.main makes it (and locks it) before a job runs
    sft_job.run(c, str(tmp_path / "run"))
    build.model(c, build.tokenizer(c)).save_hf(str(tmp_path / "base"), progress=False)  # the seed's base again
    merged = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path / "run" / "hf_export")).eval()
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path / "base")).eval()
    ids = np.random.default_rng(0).integers(3, 200, (2, 12))
    mask = np.ones_like(ids)
    want, untrained = hf_logits(merged, ids, mask), hf_logits(base, ids, mask)
    assert np.abs(untrained - want).max() > 1e-3  # the adapters trained: not the base
    adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "run" / lora_lib.PEFT_EXPORT)).eval()
    np.testing.assert_allclose(hf_logits(adapted, ids, mask), want, atol=1e-4)
