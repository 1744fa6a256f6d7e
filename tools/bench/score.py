"""PISM scoring of a dataset: mmjax's batched scorer vs a per-sample loop calling the sampler per (ratio, attempt).

    python tools/bench/score.py [--samples 4] [--loop-samples 2] [--ratios 10] [--attempts 10] [--new-tokens 32]
    python tools/bench/score.py --quick      # tiny model, 2 samples, ratios (0, 0.5), K=2, greedy: a smoke test

The BENCH.md `bench` model (random init from --seed, with the tiny tokenizer's special ids),
the SPEC 2.1 protocol (ratios 0.0 .. 0.9, K answers each, a fresh rectangle mask for every
attempt, temperature 0.7) on ColourChoiceSource rows: one 448x448 image each (256 merged
vision tokens), the SPEC 2.3 system prompt and question, one accuracy reward.

  * mmjax: `mmjax.difficulty.scoring.Scorer.score` on all samples at once: one sampler call
    per sub-batch of --sampler-batch completions (the clean image's K answers share one
    prefill; every masked image is its own prompt, encoded once);
  * the reference: what the released code does through its generation API, one sampler call
    (mmjax's, batch 1) per (sample, ratio, attempt), each with its own masked image.

Both sides use the same masks (the scorer's own draw), the same image processing, the same
reward and fixed-length answers (EOS and special tokens cannot be sampled), so they do the
same work per answer; the figure is samples per second, and the ratio mmjax / loop
(BENCH.md target >= 10x). Compilation is a warm-up on each side (reported apart); mmjax's
figure is the median of --repeats runs, the loop's one pass over --loop-samples samples
(its cost is linear in the samples). With --temperature 0 both sides answer greedily and
their answers are compared (they must agree).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def model_config(preset: str, tok):
    """The preset with the tokenizer's special ids (the bench preset keeps its 8192-id vocabulary)."""
    from mmjax.models import qwen2_5_vl
    from mmjax.processing import special_token_ids
    ids = special_token_ids(tok)
    cfg = qwen2_5_vl.preset(preset)
    return cfg.replace(
        image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
        vision_start_token_id=ids.vision_start_token_id, vision_end_token_id=ids.vision_end_token_id,
        text=dataclasses.replace(cfg.text, vocab_size=max(cfg.text.vocab_size, len(tok)),
                                 eos_token_id=ids.eos_token_ids[0], pad_token_id=ids.pad_token_id))


def parity_reward(completions, targets, **kwargs):
    """1 when the code points of an answer sum to an even number: a reward that reads the whole answer,
    so the greedy comparison of the two sides' passes means something on a random model."""
    return [float(sum(map(ord, c)) % 2 == 0) for c in completions]


def build(args):
    """(scorer, samples, pieces the loop shares with it)."""
    from mmjax import rewards
    from mmjax.data import batching, qa, synthetic
    from mmjax.difficulty import scoring
    from mmjax.models import qwen2_5_vl
    from mmjax.processing import ImageProcessorConfig, special_token_ids, tiny_tokenizer
    tok = tiny_tokenizer()
    cfg = model_config(args.preset, tok)
    model = qwen2_5_vl.Qwen2_5_VL.from_config(cfg, seed=args.seed, attention=args.attention)
    ids = special_token_ids(tok)
    image_cfg = ImageProcessorConfig(min_pixels=args.image ** 2, max_pixels=args.image ** 2)
    process = batching.ProcessSample(tok, image_cfg=image_cfg, tokens_per_second=cfg.vision.tokens_per_second)
    spec = cfg.input_spec(min_vision_rows=16, max_pixels=args.image ** 2)
    batcher = batching.Batcher(pad_id=ids.pad_token_id, spec=spec)
    if "bench_parity" not in rewards.names():
        rewards.register("bench_parity")(parity_reward)
    # SPEC 2.3's accuracy reward (what scoring pays for) plus the parity check (what makes passes vary).
    reward = rewards.combine({"accuracy": 1.0, "bench_parity": 1.0})
    # Fixed-length answers on both sides: only the tokenizer's plain text ids can be sampled.
    first_special = min(tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens)
    allowed = tuple(range(first_special))
    score_cfg = scoring.ScoreConfig(
        methods=("pism",), ratios=tuple(round(0.1 * i, 1) for i in range(args.ratios)) if args.ratio_list is None
        else tuple(args.ratio_list), attempts=args.attempts, temperature=args.temperature,
        max_new_tokens=args.new_tokens, sampler_batch=args.sampler_batch, host_threads=args.host_threads)
    scorer = scoring.Scorer(model, tok.decode, process, batcher, reward, score_cfg, eos_token_ids=ids.eos_token_ids,
                            pad_token_id=ids.pad_token_id, allowed_token_ids=allowed, seed=args.seed)
    task = qa.QaSample()
    source = synthetic.ColourChoiceSource(args.samples, seed=args.seed, size=(args.image, args.image))
    samples = [task.apply({**source[i], "epoch": 0, "index": i}, np.random.default_rng(0))
               for i in range(args.samples)]
    return scorer, samples


def loop_sample(scorer, sample) -> tuple[np.ndarray, list[str], int]:
    """(passes [R], answers, sampler calls) of one sample, one sampler call per (ratio, attempt)."""
    from mmjax.data.batching import arrays
    from mmjax.difficulty.scoring import _Request, _Slot
    from mmjax.models import sampler
    cfg = scorer.cfg
    processed = scorer.process.map(sample)
    slot = _Slot(sample=sample, processed=processed, passes=np.zeros(len(cfg.ratios), np.int64))
    passes, texts, calls, cache = np.zeros(len(cfg.ratios), np.int64), [], 0, {}
    for r in range(len(cfg.ratios)):
        for a in range(cfg.attempts):
            if r == 0:
                inputs = processed["inputs"]  # the clean image
            else:
                images = [m[0, a] for m in scorer._variants([slot], _Request(0, r, a), cache)]
                inputs = {**processed["inputs"], "pixel_values": scorer._pixels(images)}
            batch = arrays(scorer.batcher([{"inputs": inputs, "meta": processed["meta"]}]))
            rollout = sampler.generate(scorer.model.module, scorer.model.params, batch,
                                       max_new_tokens=cfg.max_new_tokens, sampling=cfg.sampling,
                                       seed=calls, eos_token_ids=scorer.eos, pad_token_id=scorer.pad,
                                       allowed_token_ids=scorer.allowed)
            calls += 1
            text = scorer._texts(rollout, 1)[0]  # read as the scorer reads its own answers
            passes[r] += int(scorer._correct([slot], [text], [0])[0])
            texts.append(text)
        cache.clear()
    return passes, texts, calls


def main(argv=None) -> int:
    from mmjax.models.attention import IMPLEMENTATIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--samples", type=int, default=4, help="samples mmjax scores per timed run")
    ap.add_argument("--loop-samples", type=int, default=2, help="samples the per-sample loop scores (timed once)")
    ap.add_argument("--ratios", type=int, default=10, help="ratios 0.0, 0.1, ... (SPEC 2.1: 10)")
    ap.add_argument("--ratio-list", type=float, nargs="+", default=None, help="explicit ratios instead")
    ap.add_argument("--attempts", type=int, default=10, help="K (SPEC 2.1: 10)")
    ap.add_argument("--temperature", type=float, default=0.7, help="SPEC 2.1: 0.7; 0 = greedy, answers compared")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--image", type=int, default=448, help="square image side in pixels")
    ap.add_argument("--sampler-batch", type=int, default=64, help="completions per mmjax sampler call")
    ap.add_argument("--host-threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attention", default="auto", choices=IMPLEMENTATIONS, help="mmjax's attention")
    ap.add_argument("--quick", action="store_true",
                    help="tiny model, 2 samples, ratios (0, 0.5), K=2, 4 new tokens, greedy, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.image, args.samples, args.loop_samples = "tiny", 56, 2, 2
        args.ratio_list, args.attempts, args.new_tokens, args.temperature = [0.0, 0.5], 2, 4, 0.0
        args.sampler_batch, args.repeats = 4, 1

    scorer, samples = build(args)
    start = time.perf_counter()
    records = scorer.score(samples)  # warm-up: compiles every shape the timed runs use
    first_s = time.perf_counter() - start
    calls_before = scorer.calls
    times = common.timed(lambda: scorer.score(samples), args.repeats)
    calls = (scorer.calls - calls_before) // args.repeats
    mm_s = statistics.median(times)

    loop_n = min(args.loop_samples, len(samples))
    start = time.perf_counter()
    loop_sample(scorer, samples[0])  # warm-up: compiles the batch-1 shapes
    loop_first_s = time.perf_counter() - start
    start = time.perf_counter()
    loop = [loop_sample(scorer, s) for s in samples[:loop_n]]
    loop_s = time.perf_counter() - start
    scorer.close()

    mm_rate, loop_rate = len(samples) / mm_s, loop_n / loop_s
    rows = len(samples) * len(scorer.cfg.ratios) * scorer.cfg.attempts
    out = dict(preset=args.preset, samples=len(samples), ratios=list(scorer.cfg.ratios), attempts=scorer.cfg.attempts,
               new_tokens=args.new_tokens, image=args.image, temperature=args.temperature,
               sampler_batch=args.sampler_batch,
               mmjax=dict(seconds=mm_s, samples_per_s=mm_rate, answers_per_s=rows / mm_s, sampler_calls=calls,
                          first_run_s=first_s, passes=[r["passes"] for r in records]),
               loop=dict(samples=loop_n, seconds=loop_s, samples_per_s=loop_rate,
                         sampler_calls=sum(c for _, _, c in loop), first_sample_s=loop_first_s,
                         passes=[p.tolist() for p, _, _ in loop]),
               ratio=mm_rate / loop_rate)
    if args.temperature == 0:
        # Greedy answers do not depend on the draw: both sides must give the same passes.
        agree = [r["passes"] == p.tolist() for r, (p, _, _) in zip(records, loop)]
        out["greedy_passes_agree"] = float(np.mean(agree))
    print(f"mmjax batched PISM scoring: {mm_rate:.3f} samples/s ({rows / mm_s:.1f} answers/s, {calls} sampler calls "
          f"for {len(samples)} samples; first run with compiles {first_s:.1f} s)")
    print(f"per-sample loop, one sampler call per (ratio, attempt): {loop_rate:.3f} samples/s "
          f"({out['loop']['sampler_calls']} calls for {loop_n} samples)")
    print(f"ratio mmjax / loop: {out['ratio']:.2f}x (target >= 10x)"
          + (f"; greedy passes agree on {out['greedy_passes_agree']:.3f} of samples" if "greedy_passes_agree" in out
             else ""))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
