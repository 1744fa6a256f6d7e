"""Tiny random Qwen2.5-VL models built with transformers: the oracle for parity tests."""

from __future__ import annotations

import numpy as np
import torch

IMAGE, VIDEO, VSTART, VEND = 250, 251, 252, 253
VOCAB = 256
BOS, EOS, PAD = 0, 1, 2


def hf_config(*, kv_heads=2, tie=False, window=56, fullatt=(1,), vocab=VOCAB, layers=2, depth=2):
    from transformers import Qwen2_5_VLConfig
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, rms_norm_eps=1e-6,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                          "rope_theta": 1e6}),
        vision_config=dict(depth=depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           window_size=window, fullatt_block_indexes=list(fullatt), tokens_per_second=2),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
        vision_end_token_id=VEND, tie_word_embeddings=tie, pad_token_id=2)


def build_hf_model(path: str, seed: int = 0, dtype=torch.float32, **cfg_kw):
    """Random HF model saved to `path`; returned in eval mode with eager attention."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    torch.manual_seed(seed)
    cfg = hf_config(**cfg_kw)
    cfg._attn_implementation = "eager"
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # make norms and biases non-trivial so a mapping slip shows
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    model = model.to(dtype)
    model.save_pretrained(path)
    return model


def sample_ids(rng: np.random.Generator, n_text: list[int], grids: list[tuple[int, int, int]],
               token=IMAGE, merge=2) -> list[int]:
    """text, (<vision_start> placeholders <vision_end> text)* with len(n_text) == len(grids) + 1."""
    ids = list(rng.integers(3, 240, n_text[0]))
    for g, nt in zip(grids, n_text[1:]):
        ids += [VSTART] + [token] * (g[0] * g[1] * g[2] // merge ** 2) + [VEND]
        ids += list(rng.integers(3, 240, nt))
    return ids


def pad_batch(seqs: list[list[int]], side="left", pad=2):
    t = max(map(len, seqs))
    ids = np.full((len(seqs), t), pad, np.int64)
    mask = np.zeros((len(seqs), t), np.int64)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if side == "left" else slice(0, len(s))
        ids[i, sl] = s
        mask[i, sl] = 1
    return ids, mask


def pixels(rng: np.random.Generator, grids, patch_dim=3 * 2 * 14 * 14) -> np.ndarray:
    n = sum(t * h * w for t, h, w in grids)
    return rng.standard_normal((n, patch_dim)).astype(np.float32)


def hf_logits(model, ids, mask, pixel_values=None, grid=None, **video) -> np.ndarray:
    """transformers' logits with mm_token_type_ids passed, so it uses 3-D M-RoPE."""
    tt = np.zeros_like(ids)
    tt[ids == IMAGE] = 1
    tt[ids == VIDEO] = 2
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in video.items() if v is not None}
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    pixel_values=None if pixel_values is None else torch.from_numpy(pixel_values),
                    image_grid_thw=None if grid is None else torch.tensor(grid),
                    mm_token_type_ids=torch.from_numpy(tt), **kw)
    return out.logits.float().numpy()
