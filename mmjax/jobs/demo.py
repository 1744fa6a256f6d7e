"""The demo job: tokenizer, processor, model forward, KV-cache generation and an HF round trip, on CPU."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import jax

from mmjax.models import qwen2_5_vl
from mmjax.processing import (ImageProcessorConfig, collate, process_sample, special_token_ids,
                              tiny_tokenizer)


def _bundled_image(name: str) -> np.ndarray:
    import skimage.data
    if not hasattr(skimage.data, name):
        raise ValueError(f"config.data.image={name!r} is not an image in skimage.data")
    img = getattr(skimage.data, name)()
    return np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]


def _model(config, tok):
    if config.model.hf_dir:
        return qwen2_5_vl.load_hf(config.model.hf_dir, dtype=config.model.dtype)
    ids = special_token_ids(tok)
    cfg = qwen2_5_vl.preset(config.model.preset)
    cfg = cfg.replace(
        image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
        vision_start_token_id=ids.vision_start_token_id, vision_end_token_id=ids.vision_end_token_id,
        text=dataclasses.replace(cfg.text, vocab_size=len(tok),
                                 eos_token_id=ids.eos_token_ids[0], pad_token_id=ids.pad_token_id))
    return qwen2_5_vl.Qwen2_5_VL.from_config(cfg, seed=config.seed, dtype=config.model.dtype)


def run(config, workdir: str) -> None:
    t0 = time.perf_counter()
    tok = tiny_tokenizer()
    model = _model(config, tok)
    n_params = sum(x.size for x in jax.tree.leaves(model.params))
    print(f"model: {config.model.preset or config.model.hf_dir}  {n_params / 1e6:.2f} M params  "
          f"devices: {jax.devices()}")

    image = _bundled_image(config.data.image)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": config.data.question}]}]
    image_cfg = ImageProcessorConfig(min_pixels=config.data.min_pixels, max_pixels=config.data.max_pixels)
    sample = process_sample(messages, [image], tokenizer=tok, image_cfg=image_cfg, token_ids=special_token_ids(tok))
    batch = collate([sample], pad_id=special_token_ids(tok).pad_token_id)
    grid = batch["image_grid_thw"]
    print(f"input: {config.data.image} {image.shape} -> grid {grid.tolist()} "
          f"({int(np.prod(grid)) // 4} image tokens), prompt {batch['input_ids'].shape[1]} tokens")

    logits = model.logits(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], grid)
    top = np.argsort(logits[0, -1])[::-1][:5]
    print("next-token top-5:", [(tok.decode([int(i)]), round(float(logits[0, -1, i]), 3)) for i in top])

    rollout = model.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], grid,
                             max_new_tokens=config.sample.max_new_tokens, temperature=config.sample.temperature,
                             seed=config.seed)
    n = int(rollout.lengths[0])
    print(f"generated {n} tokens (random weights, so the text is noise): "
          f"{tok.decode(rollout.tokens[0, :n].tolist())!r}  mean log-prob {rollout.logprobs[0, :n].mean():.3f}")

    out_dir = os.path.join(workdir, "hf_export")
    model.save_hf(out_dir, progress=False)
    tok.save_pretrained(out_dir)
    image_cfg.save_pretrained(out_dir)
    again = qwen2_5_vl.load_hf(out_dir, dtype=config.model.dtype, progress=False)
    diff = np.abs(again.logits(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], grid) - logits)
    print(f"HF export: {out_dir}  reloaded max |logit diff| = {diff.max():.2e}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
