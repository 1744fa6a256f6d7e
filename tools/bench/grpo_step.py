"""One GRPO step (rollout + update): mmjax's Trainer (GRPO objective) vs TRL's GRPOTrainer, on the tiny VLM.

    python tools/bench/grpo_step.py [--steps 10] [--warmup 1] [--trl_python /tmp/trl_venv/bin/python]
    python tools/bench/grpo_step.py --quick      # mmjax only, 1 step after the warm-up: a smoke test

TRL runs from its own venv, never a project dependency (the CPU torch must be exactly 2.13.0;
a looser pin pulls multi-GB CUDA wheels):

    python3 -m venv /tmp/trl_venv
    /tmp/trl_venv/bin/pip install "torch==2.13.0" trl transformers pillow datasets

Without it (or with --no-trl) only the mmjax side runs.

Same model: BENCH.md "tiny" (mmjax's tiny preset with the tiny BPE tokenizer's ids), random
weights made by transformers from --seed and saved once as an HF folder (weights, tokenizer,
image processor) that both sides load. Same data: 16 rows of "What colour is this image?
Answer with one word." + one 112 px image each (trl_reference.write_data; 64 patches, 16
merged tokens). Same rewards (trl_reference.colour_reward + length_reward; mmjax calls them
through its reward registry and `combine`). Same work: 4 prompts x 4 completions of exactly
16 new tokens: EOS cannot end a row early on either side (TRL: min_new_tokens; mmjax:
sampling restricted to every id but EOS, and neither side samples the image token, as TRL
suppresses it). TRL defaults otherwise: beta 0 (no reference model), loss dapo, 1 iteration,
temperature 1, AdamW lr 1e-6 with HF's linear schedule, weight decay 0, grad clip 1.0 (and
TRL's own default gradient_checkpointing=True, kept: it is what a TRL user gets).

Timing: mmjax's step is what `Trainer.train()` runs per step with the GRPO objective, called
piece by piece (`_draw` + `objective.prepare` + `_update` + `_metrics`), blocking on the
device after the rollout and after the update so the two are timed apart; no checkpoint
(TRL saves none either). TRL's step is the time between consecutive on_step_end callbacks.
The first --warmup steps on each side are left out (mmjax's first step compiles; its time
is reported apart); medians of the rest. The sides run one after the other (TRL in a
subprocess). mmjax uses XLA's default thread pool; TRL runs once per --trl-threads count
(default 1 and every visible core) and the faster run is the reference: the tiny model's
matmuls gain nothing from threads, and on a loaded shared machine torch's spinning OpenMP
threads were measured 10-20x slower than one thread.

Model FLOP/s of the update: 6 x params x tokens the update processes (common.update_flops:
decoder layers x text tokens + head x completion tokens + ViT x patches + merger x merged
tokens, as mmjax runs them: each prompt and image once, the G completions over its cache)
over the update's median time, and that as a share of the GEMM rate measured in this run,
so the same line reads as utilisation on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import trl_reference  # noqa: E402

DEFAULT_TRL_PYTHON = "/tmp/trl_venv/bin/python"
TRL_HELP = ('create it with:  python3 -m venv /tmp/trl_venv && /tmp/trl_venv/bin/pip install '
            '"torch==2.13.0" trl transformers pillow datasets')
REWARDS = {"bench_colour": trl_reference.colour_reward, "bench_length": trl_reference.length_reward}


# ---- the shared model folder and data ---------------------------------------------------------


def tiny_config(tok):
    """BENCH.md tiny with the tokenizer's special ids and vocabulary (as mmjax.jobs.build.model)."""
    from mmjax.models import qwen2_5_vl
    from mmjax.processing import special_token_ids
    ids = special_token_ids(tok)
    cfg = qwen2_5_vl.preset("tiny")
    return cfg.replace(
        image_token_id=ids.image_token_id, video_token_id=ids.video_token_id,
        vision_start_token_id=ids.vision_start_token_id, vision_end_token_id=ids.vision_end_token_id,
        text=dataclasses.replace(cfg.text, vocab_size=len(tok), eos_token_id=ids.eos_token_ids[0],
                                 pad_token_id=ids.pad_token_id))


def build_model_dir(out_dir: str, seed: int, image_px: int) -> None:
    """Weights (transformers init from `seed`), tokenizer and image processor in one HF folder."""
    from transformers import Qwen2VLImageProcessorPil
    from mmjax.processing import tiny_tokenizer
    tok = tiny_tokenizer()
    common.build_hf(tiny_config(tok), out_dir, seed)
    tok.save_pretrained(out_dir)
    # min = max = the image's pixel count: both sides keep the images at image_px x image_px.
    Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=image_px ** 2,
                             max_pixels=image_px ** 2).save_pretrained(out_dir)


def register_rewards() -> None:
    from mmjax import rewards
    for name, fn in REWARDS.items():
        if name not in rewards.names():
            rewards.register(name)(fn)


# ---- mmjax -----------------------------------------------------------------------------------


def mmjax_config(args, model_dir: str, data_path: str):
    """The recipe: mmjax.jobs.recipe.base() with the benchmark's work and TRL's defaults."""
    from mmjax.jobs import recipe
    c = recipe.base()
    c.tokenizer = "hf"
    c.model.hf_dir = model_dir
    c.model.attention = args.attention
    c.max_steps = args.warmup + args.steps
    c.save_steps = c.max_steps
    c.data.source = "jsonl"
    c.data.path = data_path
    c.data.system_prompt = False  # TRL's prompt is the bare question (the chat template adds its system line)
    c.data.batch_size = args.prompts
    c.data.min_pixels = c.data.max_pixels = args.image ** 2
    c.grpo.num_generations = args.generations
    c.grpo.max_completion_length = args.new_tokens
    c.optim.learning_rate = 1e-6  # TRL GRPOConfig default
    c.optim.schedule = "linear"  # HF TrainingArguments default
    c.optim.weight_decay = 0.0  # HF TrainingArguments default
    c.rewards.weights = {name: 1.0 for name in REWARDS}  # TRL: reward_weights default all 1
    if args.ragged:
        c.grpo.update_layout = "auto"  # ragged rows: packed (pooled) where it pays (issue 24)
    return c


def build_trainer(args, model_dir: str, data_path: str, workdir: str):
    from mmjax.jobs.grpo import build_trainer as build
    register_rewards()
    trainer = build(mmjax_config(args, model_dir, data_path), workdir)
    cfg, grpo = trainer.model.config, trainer.objective
    # TRL's rollout never samples the image token (suppress_tokens) nor, with min_new_tokens,
    # EOS: the same support here, so every completion is exactly new_tokens long. mmjax also
    # stops on <|endoftext|>, so that id goes too (TRL may sample it without stopping).
    if args.ragged:  # the ragged workload: the shared support, EOS in it (see ragged_support)
        allowed = ragged_support(cfg, args.new_tokens)
    else:
        banned = {cfg.image_token_id, *grpo.eos}
        allowed = tuple(i for i in range(cfg.text.vocab_size) if i not in banned)
    grpo.cfg = dataclasses.replace(grpo.cfg, allowed_token_ids=allowed)
    return trainer


def ragged_support(cfg, max_new_tokens: int) -> tuple[int, ...]:
    """--ragged: the token ids both sides may sample: EOS and K ordinary ids (the tiny model's random
    logits are nearly uniform, so each step ends a row with probability about 1 / (K + 1)). K + 1 =
    0.3 x max_new_tokens: lengths about Geometric(1 / (0.3 x max)), cut at the maximum, the long-tailed
    law of tools/bench/update_ragged.py. TRL suppresses every other id; mmjax samples only these."""
    special = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id,
               cfg.text.pad_token_id, cfg.text.eos_token_id}
    k = max(1, round(0.3 * max_new_tokens) - 1)
    ordinary = [i for i in range(3, cfg.text.vocab_size) if i not in special][:k]
    return tuple(sorted(ordinary + [cfg.text.eos_token_id]))


def update_counts(micros, cfg) -> dict[str, int]:
    """Tokens the update really processes: prompt tokens and images once per prompt, completions per row.

    Bucket padding is not counted (model FLOPs count useful work only); an image's merged
    tokens are its placeholder tokens in the prompt, each merge^2 patches.
    """
    masks = [np.asarray(m.batch["attention_mask"], bool) for m in micros]
    prompt = sum(int(k.sum()) for k in masks)
    merged = sum(int(((np.asarray(m.batch["input_ids"]) == cfg.image_token_id) & k).sum())
                 for m, k in zip(micros, masks))
    completion = sum(int(np.asarray(m.mask).sum()) for m in micros)
    return {"text_tokens": prompt + completion, "head_tokens": completion,
            "patches": merged * cfg.vision.spatial_merge_size ** 2, "merged": merged}


def run_mmjax(args, model_dir: str, data_path: str, workdir: str) -> dict:
    """Warm-up + timed steps of the Trainer's own loop body; seconds per piece."""
    import jax
    trainer = build_trainer(args, model_dir, data_path, workdir)
    params, opt_state, step, iterator, _ = trainer._restore_or_init()
    rollout_s, update_s, step_s, lengths, rewards = [], [], [], [], []
    example = None
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        example = trainer.objective.prepare(params, trainer._draw(iterator), step, lambda: next(iterator))
        jax.block_until_ready(example.micro_batches)  # beta 0: no reference log-probs
        mid = time.perf_counter()
        params, opt_state, stats, grad_norm = trainer._update(params, opt_state, example)
        jax.block_until_ready((params, opt_state, grad_norm))
        end = time.perf_counter()
        step += 1
        metrics = trainer._metrics(example, stats, grad_norm, step, end - start)  # train() logs these too
        step_s.append(time.perf_counter() - start)
        rollout_s.append(mid - start)
        update_s.append(end - mid)
        lengths.append(metrics["completions/mean_length"])
        rewards.append(metrics["reward"])
    micros = example.micro_batches
    w = args.warmup
    support = list(trainer.objective.cfg.allowed_token_ids) if args.ragged else None
    cfg = trainer.model.config
    groups = common.param_groups(params, cfg)
    counts = update_counts(micros, cfg)
    return {"step_s": common.median(step_s[w:]), "rollout_s": common.median(rollout_s[w:]),
            "update_s": common.median(update_s[w:]), "first_step_s": step_s[0], "step_s_all": step_s,
            "completion_length": lengths, "reward": rewards, "params": groups, "tokens": counts,
            "flops_6nd": common.update_flops(groups, **counts),
            "prompt_len": int(np.asarray(micros[0].batch["attention_mask"]).sum(axis=1).max()),
            "platform": jax.devices()[0].platform, "attention": args.attention, "support": support,
            "packed_micro_batches": metrics.get("update/packed_micro_batches")}


# ---- TRL ---------------------------------------------------------------------------------------


def trl_thread_counts(spec: str) -> list[int]:
    """"1,all" -> [1, visible cores] (deduplicated, in order)."""
    cores = len(os.sched_getaffinity(0))
    counts = []
    for part in spec.split(","):
        n = cores if part.strip() == "all" else int(part)
        if n < 1:
            raise ValueError(f"--trl-threads: {part!r} is not a positive thread count or 'all'")
        if n not in counts:
            counts.append(n)
    return counts


def run_trl(args, model_dir: str, data_path: str, workdir: str, threads: int) -> dict:
    """trl_reference.py in TRL's venv with `threads` torch threads; its last stdout line is a JSON object."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "trl_reference.py")
    cmd = [args.trl_python, script, "--model-dir", model_dir, "--data", data_path, "--workdir", workdir,
           "--steps", str(args.warmup + args.steps), "--warmup", str(args.warmup),
           "--prompts-per-step", str(args.prompts), "--num-generations", str(args.generations),
           "--max-completion-length", str(args.new_tokens), "--threads", str(threads)]
    if args.ragged:
        cmd += ["--support", ",".join(map(str, args.support))]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"TRL side failed ({' '.join(cmd)}), exit {res.returncode}:\n"
                           f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def trl_python(args) -> str | None:
    """The TRL interpreter to use, or None (with the reason printed) to run mmjax alone."""
    if args.no_trl:
        return None
    if args.trl_python is None:
        if args.quick:  # the smoke test stays mmjax-only unless TRL is asked for by name
            print("TRL side skipped in --quick (pass --trl_python to run it for 1 step too)")
            return None
        args.trl_python = DEFAULT_TRL_PYTHON
    if not os.path.exists(args.trl_python):
        print(f"TRL side SKIPPED: no TRL venv at {args.trl_python}; {TRL_HELP}")
        return None
    return args.trl_python


# ---- main ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    from mmjax.models.attention import IMPLEMENTATIONS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side, after the warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps per side (mmjax compiles)")
    ap.add_argument("--trl_python", "--trl-python", default=None,
                    help=f"TRL venv's python (default {DEFAULT_TRL_PYTHON} if it exists)")
    ap.add_argument("--no-trl", action="store_true", help="run the mmjax side only")
    ap.add_argument("--trl-threads", default="1,all",
                    help="torch thread counts to run TRL with; the fastest is the reference (the tiny "
                         "model's matmuls gain nothing from threads, and a loaded machine makes torch's "
                         "spinning threads many times slower)")
    ap.add_argument("--attention", default="auto", choices=IMPLEMENTATIONS)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--generations", type=int, default=4, help="G completions per prompt")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens per completion (fixed length)")
    ap.add_argument("--image", type=int, default=112, help="square image side in pixels (multiple of 28)")
    ap.add_argument("--rows", type=int, default=16, help="rows in the data file")
    ap.add_argument("--seed", type=int, default=0, help="weights of the tiny model")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--ragged", action="store_true",
                    help="ragged completions (issue 24): EOS allowed, both sides sampling one small shared support "
                         "so lengths follow about Geometric(1 / (0.3 x --new-tokens)); mmjax's update_layout auto")
    ap.add_argument("--quick", action="store_true", help="1 timed step, mmjax only: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.gemm_n = 1, 1, 256
    if args.image % 28:
        ap.error(f"--image {args.image} must be a multiple of 28 (patch 14 x merge 2)")

    python = trl_python(args)
    with tempfile.TemporaryDirectory(prefix="grpo_step_") as tmp:
        model_dir, mm_dir, trl_dir = (os.path.join(tmp, d) for d in ("model", "mmjax", "trl"))
        for d in (model_dir, mm_dir, trl_dir):
            os.makedirs(d)
        build_model_dir(model_dir, args.seed, args.image)
        data_path = trl_reference.write_data(model_dir, args.rows, args.image)
        mm = run_mmjax(args, model_dir, data_path, mm_dir)
        args.support = mm.get("support")
        refs = [run_trl(args, model_dir, data_path, trl_dir, t) for t in trl_thread_counts(args.trl_threads)] \
            if python else []
    gemm = common.gemm_rate(args.gemm_n, reps=1 if args.quick else 5)
    report(args, mm, refs, gemm)
    return 0


def report(args, mm: dict, refs: list[dict], gemm: float) -> None:
    p, g, n = args.prompts, args.generations, args.new_tokens
    c = mm["tokens"]
    flops_s = mm["flops_6nd"] / mm["update_s"]
    shape = (f"ragged completions of at most {n} tokens (shared support of {len(args.support or [])} ids)"
             if args.ragged else f"{n} new tokens (fixed length)")
    print(f"grpo step tiny (fp32): {p} prompts x G={g}, {shape}, {args.image}px image "
          f"per prompt, prompt {mm['prompt_len']} tokens; {args.steps} timed steps after {args.warmup} warm-up; "
          f"mmjax on {mm['platform']}, attention {mm['attention']}; params "
          f"{common.fmt_params(mm['params']['total'])}")
    print(f"  mmjax Trainer (GRPO): step median {mm['step_s'] * 1e3:.1f} ms (rollout {mm['rollout_s'] * 1e3:.1f} ms, "
          f"update {mm['update_s'] * 1e3:.1f} ms); first step {mm['first_step_s']:.1f} s (compile included, "
          f"apart); mean completion length per step {[round(x, 1) for x in mm['completion_length']]}")
    print(f"  update model FLOP/s: 6ND {mm['flops_6nd'] / 1e6:.1f} MFLOP (text {c['text_tokens']}, head "
          f"{c['head_tokens']}, patches {c['patches']}, merged {c['merged']} tokens) / {mm['update_s'] * 1e3:.1f} ms "
          f"= {flops_s / 1e9:.3f} GFLOP/s, {flops_s / gemm:.2%} of the GEMM rate "
          f"({gemm / 1e9:.1f} GFLOP/s, fp32 {args.gemm_n}^3)")
    for ref in refs:
        trl_own = f", TRL's own step_time {ref['trl_step_time_s'] * 1e3:.1f} ms" if ref["trl_step_time_s"] else ""
        print(f"  TRL GRPOTrainer (trl {ref['versions']['trl']}, torch {ref['versions']['torch']}, "
              f"{ref['threads']} threads): step median {ref['step_s'] * 1e3:.1f} ms{trl_own}; first step "
              f"{ref['step_s_all'][0]:.1f} s; mean completion length per step "
              f"{[round(x, 1) for x in ref['completion_length'] if x is not None]}")
    ref = min(refs, key=lambda r: r["step_s"]) if refs else None
    ratio = None
    if ref is not None:
        ratio = ref["step_s"] / mm["step_s"]
        print(f"  ratio TRL / mmjax step time: {ratio:.2f}x (mmjax speed-up against TRL's faster thread "
              f"count, {ref['threads']}; target {'>= 4x (ragged)' if args.ragged else '>= 3x'})")
    print(json.dumps(dict(bench="grpo_step", ragged=args.ragged, prompts=p, generations=g, new_tokens=n,
                          image_px=args.image,
                          steps=args.steps, warmup=args.warmup, mmjax=mm, trl=ref, trl_runs=refs, ratio=ratio,
                          update_flops_per_s=flops_s, gemm_flops=gemm), default=str))


if __name__ == "__main__":
    sys.exit(main())
