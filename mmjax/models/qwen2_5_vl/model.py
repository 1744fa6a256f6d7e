"""Qwen2.5-VL as a Flax module with pure entry points, and a thin holder for users.

The module's methods are the pure functions: `apply({'params': p}, ..., method=...)`.
  - `encode_vision(pixel_values, layout)`: merged visual embeddings, original order.
  - `embed(input_ids, image_embeds, video_embeds)`: token embeddings with visual ones
    placed at the image / video placeholder tokens.
  - `decode(inputs_embeds, position_ids, key_valid, cache, cache_index, key_groups)`:
    final hidden states (+ cache, + attention masses).
  - `logits(hidden)`: the output head.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mmjax.models.layers import dense
from mmjax.models.qwen2_5_vl.config import Qwen25VLConfig
from mmjax.models.qwen2_5_vl.language import TextModel
from mmjax.models.qwen2_5_vl.vision import VisionTransformer

Dtype = Any


def place_embeddings(embeds: jax.Array, token_mask: jax.Array, features: jax.Array) -> jax.Array:
    """Write features [N, D] into embeds [B, T, D] at the N positions where token_mask is set.

    Positions are filled in row-major order, as transformers' masked_scatter does.
    """
    flat = token_mask.reshape(-1)
    idx = jnp.clip(jnp.cumsum(flat) - 1, 0, features.shape[0] - 1)
    gathered = features[idx].reshape(embeds.shape).astype(embeds.dtype)
    return jnp.where(token_mask[..., None], gathered, embeds)


class Qwen25VL(nn.Module):
    cfg: Qwen25VLConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.visual = VisionTransformer(self.cfg.vision, **kw)
        self.language_model = TextModel(self.cfg.text, **kw)
        if not self.cfg.tie_word_embeddings:
            self.lm_head = dense(self.cfg.text.vocab_size, ("embed", "vocab"), use_bias=False,
                                 name="lm_head", **kw)

    def encode_vision(self, pixel_values, layout):
        return self.visual(pixel_values, layout)

    def embed(self, input_ids, image_embeds=None, video_embeds=None):
        x = self.language_model.embed(input_ids)
        if image_embeds is not None:
            x = place_embeddings(x, input_ids == self.cfg.image_token_id, image_embeds)
        if video_embeds is not None:
            x = place_embeddings(x, input_ids == self.cfg.video_token_id, video_embeds)
        return x

    def decode(self, inputs_embeds, position_ids, key_valid, cache=None, cache_index=0, key_groups=None):
        return self.language_model(inputs_embeds, position_ids, key_valid, cache, cache_index, key_groups)

    def logits(self, hidden):
        if self.cfg.tie_word_embeddings:
            return self.language_model.attend(hidden)
        return self.lm_head(hidden)

    def __call__(self, input_ids, position_ids, attention_mask, image=None, video=None):
        """Full-sequence logits [B, T, V]. image / video: (pixel_values, layout) or None."""
        image_embeds = self.encode_vision(*image) if image is not None else None
        video_embeds = self.encode_vision(*video) if video is not None else None
        x = self.embed(input_ids, image_embeds, video_embeds)
        hidden, _, _ = self.decode(x, position_ids, attention_mask.astype(bool))
        return self.logits(hidden)
