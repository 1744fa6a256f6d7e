"""Sharded runs on 8 host devices equal one device (tests/models/sharded_forward.py, run once)."""

import os
import subprocess
import sys

import pytest

CHECKS = ("forward", "training", "generate", "global", "bind", "learner", "lora", "packed_blockwise")


@pytest.fixture(scope="module")
def run():
    here = os.path.dirname(__file__)
    root = os.path.dirname(os.path.dirname(here))  # the configs/ package
    rl = os.path.join(root, "tests", "rl")  # ragged.py: the learner check's reward
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([here, rl, root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(here, "sharded_forward.py"), *CHECKS], env=env,
                          capture_output=True, text=True, timeout=900)
    return proc.stdout.splitlines(), proc.stdout + "\n".join(
        line for line in proc.stderr.splitlines() if "Involuntary full rematerialization" not in line)[-6000:]


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.slow  # a subprocess with 8 devices running every check
def test_sharded_equals_single_device(run, check):
    """forward: logits; training: value_and_grad of completion_logprobs on 3 mesh shapes, params
    and grads in their shards; generate: sampled tokens and log-probs; global: global_batch;
    bind: activation constraints reach the program inside activation_rules; learner / lora: a GRPO step,
    packed, and with LoRA adapters."""
    lines, output = run
    assert f"OK {check}" in lines, output
