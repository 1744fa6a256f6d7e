"""Qwen2.5-VL as a Flax module with pure entry points, and the user-facing model around it (api.py).

The module's methods are the pure functions: `apply({'params': p}, ..., method=...)`.
  - `encode_vision(vision)`: merged visual embeddings of a `model_batch` vision dict.
  - `embed(input_ids, image_embeds, video_embeds)`: token embeddings with visual ones
    placed at the image / video placeholder tokens.
  - `decode(inputs_embeds, position_ids, key_valid, cache, cache_index, key_groups, prefix)`:
    final hidden states (+ cache, + attention masses); `prefix` lets rows share a prompt's cache.
  - `logits(hidden)`: the output head, in float32.
  - `embed_batch(batch)`: `encode_vision` + `embed` for a `model_batch` dict.
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


class Qwen25VLModule(nn.Module):
    """The Flax module. dtype is the compute dtype, param_dtype the stored one (they may differ:
    float32 master weights with bfloat16 compute for training). The output head always runs in
    float32. attention: a `mmjax.models.attention` implementation name; remat / vision_remat: a
    `mmjax.models.remat` policy for the decoder layers / the ViT blocks."""
    cfg: Qwen25VLConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"
    remat: str = "none"
    vision_remat: str = "none"

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.visual = VisionTransformer(self.cfg.vision, remat=self.vision_remat, attention=self.attention, **kw)
        self.language_model = TextModel(self.cfg.text, attention=self.attention, remat=self.remat, **kw)
        if not self.cfg.tie_word_embeddings:
            self.lm_head = dense(self.cfg.text.vocab_size, ("embed", "vocab"), use_bias=False,
                                 name="lm_head", **kw)

    def encode_vision(self, vision):
        """Merged embeddings [Np / merge^2, D] of a `model_batch` image / video dict."""
        return self.visual(vision["pixel_values"], vision)

    def embed(self, input_ids, image_embeds=None, video_embeds=None):
        x = self.language_model.embed(input_ids)
        if image_embeds is not None:
            x = place_embeddings(x, input_ids == self.cfg.image_token_id, image_embeds)
        if video_embeds is not None:
            x = place_embeddings(x, input_ids == self.cfg.video_token_id, video_embeds)
        return x

    def embed_batch(self, batch):
        """Token embeddings of a `model_batch` dict, visual features placed (images encoded once)."""
        image = self.encode_vision(batch["image"]) if batch.get("image") is not None else None
        video = self.encode_vision(batch["video"]) if batch.get("video") is not None else None
        return self.embed(batch["input_ids"], image, video)

    def decode(self, inputs_embeds, position_ids, key_valid, cache=None, cache_index=0, key_groups=None,
               prefix=None, segments=None):
        return self.language_model(inputs_embeds, position_ids, key_valid, cache, cache_index, key_groups, prefix,
                                   segments)

    def head_kernel(self):
        """The output head as stored, [D, V] (the transposed embedding when tied)."""
        if self.cfg.tie_word_embeddings:
            return nn.unbox(self.language_model.embed_tokens.embedding).T
        if self.is_initializing():
            self.lm_head(jnp.zeros((1, self.cfg.text.hidden_size), self.dtype))
        return nn.unbox(self.lm_head.variables["params"]["kernel"])

    def logits(self, hidden):
        """float32 logits [..., V] from hidden states, through a float32 head."""
        return jnp.dot(hidden.astype(jnp.float32), jnp.asarray(self.head_kernel(), jnp.float32))

    def __call__(self, input_ids, position_ids, attention_mask, image=None, video=None):
        """Full-sequence float32 logits [B, T, V]. image / video: `model_batch` vision dicts or None."""
        x = self.embed_batch({"input_ids": input_ids, "image": image, "video": video})
        hidden, _, _ = self.decode(x, position_ids, attention_mask.astype(bool))
        return self.logits(hidden)
