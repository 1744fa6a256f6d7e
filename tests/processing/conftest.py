"""Fixtures for the processing tests: the tiny tokenizer and transformers oracles."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from mmjax.processing import QWEN2_5_VL_CHAT_TEMPLATE, special_token_ids, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_tok():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_ids(tiny_tok):
    return special_token_ids(tiny_tok)


@pytest.fixture(scope="session")
def hf_rope_model(tiny_ids):
    """Tiny random Qwen2_5_VLModel whose get_rope_index is the oracle for M-RoPE positions."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            bos_token_id=tiny_ids.bos_token_id,
            eos_token_id=tiny_ids.eos_token_ids[0],
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            window_size=56,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=tiny_ids.image_token_id,
        video_token_id=tiny_ids.video_token_id,
        vision_start_token_id=tiny_ids.vision_start_token_id,
        vision_end_token_id=tiny_ids.vision_end_token_id,
    )
    return Qwen2_5_VLModel(config).eval()


def _hf_rope_index(model, input_ids, types, attention_mask, image_grid_thw, video_grid_thw, seconds, tokens_per_second):
    """transformers' get_rope_index on numpy inputs (grids/seconds None or arrays)."""
    model.config.vision_config.tokens_per_second = tokens_per_second

    def tensor(x, dtype=None):
        return None if x is None or len(x) == 0 else torch.as_tensor(np.asarray(x), dtype=dtype)

    with torch.no_grad():
        positions, deltas = model.get_rope_index(
            torch.as_tensor(np.asarray(input_ids, dtype=np.int64)),
            mm_token_type_ids=torch.as_tensor(np.asarray(types, dtype=np.int64)),
            image_grid_thw=tensor(image_grid_thw, torch.long),
            video_grid_thw=tensor(video_grid_thw, torch.long),
            second_per_grid_ts=tensor(seconds, torch.float32),
            attention_mask=None if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)),
        )
    return positions.numpy(), deltas.numpy()


@pytest.fixture(scope="session")
def hf_rope(hf_rope_model):
    """hf_rope(input_ids, types, attention_mask, image_grids, video_grids, seconds, tokens_per_second)."""
    return functools.partial(_hf_rope_index, hf_rope_model)


@pytest.fixture(scope="session")
def hf_processor(tiny_tok):
    """transformers' Qwen2_5_VLProcessor with the PIL image processor and the tiny tokenizer.

    Its video processor needs torchvision (not installed), so the processor is built
    without one; only the type check of that absent argument is bypassed.
    """
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    check = Qwen2_5_VLProcessor.check_argument_for_proper_class
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            Qwen2_5_VLProcessor,
            "check_argument_for_proper_class",
            lambda self, name, arg: None if arg is None else check(self, name, arg),
        )
        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessorPil(),
            tokenizer=tiny_tok,
            video_processor=None,
            chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        )
