"""The demo job (`config.mode = "demo"`): GRPO on CPU, then evidence that it learned.

1. evaluate the initial policy greedily on held-out samples, with images and blanked;
2. train with GRPO (`mmjax.jobs.grpo`), checkpoints and metrics in the workdir;
3. evaluate again; write workdir/report/reward_curve.png and summary.md;
4. export workdir/hf_export (loads in transformers) and check it reloads exactly.
"""

from __future__ import annotations

import itertools
import json
import os
import time

import jax
import numpy as np

from mmjax.data.batching import arrays
from mmjax.jobs import grpo as grpo_job
from mmjax.jobs import build
from mmjax.models import qwen2_5_vl, sampler
from mmjax.models.batched_generation import generate_batches
from mmjax.train import checkpoints
from mmjax.train.metrics import read_metrics


def evaluate(model, data, reward, decode, *, num_batches: int, allowed_token_ids, max_new_tokens: int,
             blank_images: bool = False, bucket_lengths=None) -> float:
    """Mean reward of greedy answers over `num_batches` batches (images zeroed if blank_images)."""

    def device_batch(batch):
        device = arrays(batch)
        if blank_images and device["image"] is not None:  # zero pixels = the mean image after normalising
            device = {**device, "image": {**device["image"],
                                          "pixel_values": np.zeros_like(device["image"]["pixel_values"])}}
        return device

    def generate(_, __, device):
        return sampler.generate(model.module, model.params, device, max_new_tokens=max_new_tokens,
                                allowed_token_ids=allowed_token_ids, bucket_lengths=bucket_lengths)

    scores, seen = [], 0
    for _, batch, out in generate_batches(itertools.islice(data, num_batches), device_batch, generate):
        texts = [decode(ids) for ids in out.completion_ids()]
        scores += reward(texts, batch["meta"]["solution"], task=batch["meta"]["task"]).total
        seen += 1
    if seen < num_batches:
        raise ValueError(f"the held-out data has {seen} batches, fewer than num_batches={num_batches}")
    return float(np.mean(scores))


def _report(workdir: str, before: dict, after: dict, chance: float, seconds: float) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    steps = [r["step"] for r in rows]
    rewards = [r["reward"] for r in rows]
    out_dir = os.path.join(workdir, "report")
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, rewards, label="reward (train batch)")
    k = min(20, len(rewards))
    if len(rewards) >= k > 1:
        smooth = np.convolve(rewards, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, label=f"mean of last {k}")
    ax.axhline(chance, color="grey", ls="--", label="chance")
    ax.set_xlabel("step"), ax.set_ylabel("reward"), ax.legend(), ax.set_title("GRPO on the tiny Qwen2.5-VL")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "reward_curve.png"), dpi=100)
    plt.close(fig)
    first, last = float(np.mean(rewards[:k])), float(np.mean(rewards[-k:]))
    lines = [
        "# mmjax demo: GRPO on CPU", "",
        f"- steps: {len(rows)}, wall time {seconds:.0f} s",
        f"- train reward: first {k} steps {first:.3f}, last {k} steps {last:.3f} (chance {chance:.2f})",
        f"- held-out greedy accuracy: before {before['images']:.3f}, after {after['images']:.3f}",
        f"- the same with the images blanked: before {before['blank']:.3f}, after {after['blank']:.3f}",
        "", "![reward curve](reward_curve.png)", "",
    ]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"first_mean_reward": first, "last_mean_reward": last, "chance": chance,
                   "before": before, "after": after, "steps": len(rows), "seconds": seconds}, f, indent=2)
    return "\n".join(lines)


def run(config, workdir: str) -> dict:
    t0 = time.perf_counter()
    build.write_resolved_config(config, workdir)
    tok = build.tokenizer(config)
    trainer = grpo_job.build_trainer(config, workdir, tok=tok)
    grpo = trainer.objective
    held_out = build.dataset(config, tok, trainer.model, seed_offset=config.eval.seed_offset, num_epochs=1,
                             shuffle=False)
    allowed = build.allowed_token_ids(config, tok)
    kw = dict(num_batches=config.eval.num_batches, allowed_token_ids=allowed,
              max_new_tokens=config.grpo.max_completion_length, bucket_lengths=grpo.bucket_lengths)

    def both(model):
        return {"images": evaluate(model, held_out, grpo.reward, tok.decode, **kw),
                "blank": evaluate(model, held_out, grpo.reward, tok.decode, blank_images=True, **kw)}

    n_params = sum(x.size for x in jax.tree.leaves(trainer.model.params))
    print(f"model: {config.model.preset or config.model.hf_dir} {n_params / 1e6:.2f} M params on {jax.devices()}")
    before = both(trainer.model)
    print(f"before training: held-out accuracy {before['images']:.3f} (images blanked: {before['blank']:.3f})")
    trainer.train()
    after = both(trainer.model)
    print(f"after training:  held-out accuracy {after['images']:.3f} (images blanked: {after['blank']:.3f})")
    chance = 1.0 / max(1, len(config.sample.allowed_tokens) or 4)
    print(_report(workdir, before, after, chance, time.perf_counter() - t0))

    out_dir = checkpoints.export_hf(workdir, trainer.model, savers=(tok, build.image_config(config)))
    again = qwen2_5_vl.load_hf(out_dir, progress=False)
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(trainer.model.params)))
    print(f"HF export: {out_dir} (reloads {'bit-exactly' if same else 'WITH DIFFERENCES'})")
    return {"before": before, "after": after}
