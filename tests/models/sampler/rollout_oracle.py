"""Prompt sets and transformers-side helpers shared by the sampler tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from oracle import IMAGE, pad_batch, pixels, sample_ids


@dataclasses.dataclass
class Prompts:
    """Prompts kept one by one so tests can batch any subset (with repeats)."""
    ids: list[list[int]]
    grids: list[list[tuple[int, int, int]]]
    pixels: list[np.ndarray]

    def batch(self, rows=None) -> dict:
        rows = range(len(self.ids)) if rows is None else rows
        ids, mask = pad_batch([self.ids[r] for r in rows])
        grids = [g for r in rows for g in self.grids[r]]
        px = [self.pixels[r] for r in rows if self.grids[r]]
        return dict(input_ids=ids, attention_mask=mask,
                    pixel_values=np.concatenate(px) if px else None,
                    image_grid_thw=np.array(grids) if grids else None)


def make_prompts(seed: int, layout: list[tuple[list[int], list[tuple[int, int, int]]]]) -> Prompts:
    """layout: per prompt, (text run lengths, image grids) as oracle.sample_ids takes them."""
    rng = np.random.default_rng(seed)
    ids = [sample_ids(rng, n_text, grids) for n_text, grids in layout]
    return Prompts(ids, [list(g) for _, g in layout], [pixels(rng, g) for _, g in layout])


# One image; two images of different sizes; text only: three lengths, so left padding.
LAYOUT = [([5, 3], [(1, 4, 4)]), ([2, 4, 6], [(1, 4, 6), (1, 2, 2)]), ([11], [])]


def hf_generate(model, batch: dict, **kw) -> np.ndarray:
    """transformers' generate (3-D M-RoPE via mm_token_type_ids): the new tokens only."""
    ids = batch["input_ids"]
    tensor = lambda x: None if x is None else torch.from_numpy(np.asarray(x))
    with torch.no_grad():
        out = model.generate(input_ids=tensor(ids), attention_mask=tensor(batch["attention_mask"]),
                             pixel_values=tensor(batch["pixel_values"]),
                             image_grid_thw=tensor(batch["image_grid_thw"]),
                             mm_token_type_ids=tensor((ids == IMAGE).astype(np.int64)), **kw)
    return out[:, ids.shape[1]:].numpy()


def full_sequences(prompts: Prompts, rollout) -> tuple[dict, int]:
    """Each rollout row's prompt (left-padded) followed by its completion (right-padded).

    Returns the batch and the prompt width: completion token j sits at column width + j, so
    the logits that predicted it are at column width + j - 1.
    """
    b = prompts.batch(rollout.prompt_index.tolist())
    width = b["input_ids"].shape[1]
    b["input_ids"] = np.concatenate([b["input_ids"], rollout.tokens], axis=1)
    b["attention_mask"] = np.concatenate([b["attention_mask"], rollout.mask.astype(np.int64)], axis=1)
    return b, width


def completion_logits(logits: np.ndarray, width: int, steps: int) -> np.ndarray:
    """[N, steps, V] logits that predicted completion tokens 0..steps-1."""
    return logits[:, width - 1: width - 1 + steps]
