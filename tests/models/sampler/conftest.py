"""A tiny transformers model + its mmjax twin, and prompts with images, for the sampler tests."""

from __future__ import annotations

import pytest

import mmjax.models.qwen2_5_vl as qwen
from oracle import build_hf_model
from rollout_oracle import LAYOUT, Prompts, make_prompts


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sampler_model"))
    return build_hf_model(path, seed=3), qwen.load_hf(path, progress=False)


@pytest.fixture(scope="session")
def prompts() -> Prompts:
    return make_prompts(0, LAYOUT)
