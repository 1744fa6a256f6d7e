"""Key groups for the attention-mass capture CMAB uses (SPEC.md 2.2).

The attention function reduces each query row's probabilities onto G groups of keys
(`key_groups` [B, S, G]); this module says which prompt positions belong to which group.
Positions of generated tokens and padding belong to none.
"""

from __future__ import annotations

import numpy as np

VISUAL = 0               # image and video placeholder positions
TEXT = 1                 # every other prompt position
TEXT_BEFORE_VISUAL = 2   # prompt text before the first visual placeholder (released CMAB code)
GROUP_NAMES = ("visual", "text", "text_before_visual")
NUM_GROUPS = len(GROUP_NAMES)


def key_groups(input_ids: np.ndarray, attention_mask: np.ndarray, image_token_id: int,
               video_token_id: int) -> np.ndarray:
    """float32 [B, T, 3] 0/1 membership of each prompt position in the groups above."""
    ids = np.asarray(input_ids)
    valid = np.asarray(attention_mask).astype(bool)
    visual = ((ids == image_token_id) | (ids == video_token_id)) & valid
    text = valid & ~visual
    has_visual = visual.any(axis=1)
    first_visual = np.where(has_visual, visual.argmax(axis=1), ids.shape[1])
    before = np.arange(ids.shape[1])[None, :] < first_visual[:, None]
    return np.stack([visual, text, text & before], axis=-1).astype(np.float32)
