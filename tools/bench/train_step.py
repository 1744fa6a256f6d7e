"""Completion log-probs forward + backward: mmjax vs torch eager autograd on the transformers model.

    python tools/bench/train_step.py [--reps 5] [--prompts 2] [--generations 4] [--image 448]
                                     [--text 32] [--completion 64] [--attention auto] [--remat none]
    python tools/bench/train_step.py --quick      # tiny model, tiny shapes, 1 rep: a smoke test
    python tools/bench/train_step.py --lora 8     # gradients + AdamW: LoRA r=8 against full fine-tuning

The BENCH.md `bench` model in float32 (random, built by transformers, loaded into mmjax with
`load_hf`, so both sides hold the same weights), the same tokens and images on both sides:
P prompts, each one square image (448 px: 256 merged tokens, 1024 patches) + `--text` text
tokens, and G completions of `--completion` tokens per prompt (every other row stops at 3/4,
masked). The step is the gradient of the masked sum of the completion tokens' log-probs
w.r.t. all parameters:
  * mmjax: jax.jit(jax.value_and_grad(...)) of `completion_logprobs` (each prompt and its
    image run once, the G completions over its KV cache as a shared prefix), compiled ahead (the
    compile time is reported apart);
  * torch: what TRL does: each of the P x G rows is a full forward of prompt + completion
    (prompt and image repeated G times), logits_to_keep = completion + 1, log_softmax at the
    completion positions, masked sum, backward (sdpa attention, eager autograd).
Calls alternate round by round after one warm-up each; medians are printed, and the ratio.

Model FLOP utilisation: 6 x params x tokens (common.update_flops: decoder layers x text
tokens + head x completion tokens + ViT x patches + merger x merged tokens) over the GEMM
rate measured in this run (the median of jax fp32 matmuls of --gemm-n^3, three before each
round of steps), against the step's median. Tokens
are counted as the update processes them: mmjax runs prompt tokens and images once per
prompt and completion tokens per row; the torch side's count (prompts and images G times)
is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def mmjax_step(model, num_generations: int):
    """jit(value_and_grad) of the masked sum of completion log-probs, and the log-probs."""
    import jax
    from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
    module = model.module

    def loss(params, batch, comp, comp_mask):
        lp, _ = completion_logprobs(module, params, batch, comp, comp_mask, num_generations=num_generations)
        return lp.sum(), lp  # lp is 0 where the mask is off: a masked sum

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


def lora_steps(model, num_generations: int, rank: int):
    """(full fine-tuning step, LoRA step, adapters): each jit(grads + one AdamW update) of the masked
    log-prob sum; LoRA differentiates and updates the adapters alone, the base a frozen input."""
    import jax
    import optax
    from mmjax.models import lora
    from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs
    spec = lora.LoraSpec(rank=rank, alpha=float(rank))
    wrapped = lora.wrap(model.module, spec)
    adapters = lora.init_adapters(model.module, spec, jax.random.key(0))
    optimizer = optax.adamw(1e-5)

    def full(params, opt_state, batch, comp, comp_mask):
        def loss(p):
            lp, _ = completion_logprobs(model.module, p, batch, comp, comp_mask, num_generations=num_generations)
            return lp.sum()
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def adapted(adapter_params, opt_state, base, batch, comp, comp_mask):
        def loss(a):
            lp, _ = completion_logprobs(wrapped, lora.combined(base, a), batch, comp, comp_mask,
                                        num_generations=num_generations)
            return lp.sum()
        value, grads = jax.value_and_grad(loss)(adapter_params)
        updates, opt_state = optimizer.update(grads, opt_state, adapter_params)
        return optax.apply_updates(adapter_params, updates), opt_state, value

    return jax.jit(full), jax.jit(adapted), adapters, optimizer


def lora_main(args, model, batch, comp_j, mask_j, g: int) -> int:
    """--lora: the optimizer step (gradients + AdamW) with LoRA against full fine-tuning, same run."""
    import jax
    full, adapted, adapters, optimizer = lora_steps(model, g, args.lora)
    params = model.params
    full_state, lora_state = optimizer.init(params), optimizer.init(adapters)
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    full_c, full_compile = common.compile_jitted(full, params, full_state, batch, comp_j, mask_j)
    lora_c, lora_compile = common.compile_jitted(adapted, adapters, lora_state, params, batch, comp_j, mask_j)
    run_full = lambda: jax.block_until_ready(full_c(params, full_state, batch, comp_j, mask_j))  # noqa: E731
    run_lora = lambda: jax.block_until_ready(lora_c(adapters, lora_state, params, batch, comp_j, mask_j))  # noqa: E731
    loss_full, loss_lora = float(run_full()[2]), float(run_lora()[2])  # warm-up; B = 0: the same loss
    times = {"full": [], "lora": []}
    for _ in range(args.reps):
        times["full"] += common.timed(run_full, 1)
        times["lora"] += common.timed(run_lora, 1)
    med = {k: common.median(v) for k, v in times.items()}
    state = {"full": nbytes(full_state), "lora": nbytes(lora_state)}
    trainable = {"full": sum(x.size for x in jax.tree.leaves(params)),
                 "lora": sum(x.size for x in jax.tree.leaves(adapters))}
    print(f"train step --lora {args.lora} ({args.preset}, fp32, {jax.devices()[0].platform}): gradients + AdamW")
    print(f"  full fine-tuning: median {med['full'] * 1e3:.0f} ms, trainable {trainable['full'] / 1e6:.2f} M, "
          f"optimizer state {state['full'] / 2**20:.1f} MiB (compile {full_compile:.1f} s)")
    print(f"  LoRA r={args.lora}: median {med['lora'] * 1e3:.0f} ms, trainable {trainable['lora'] / 1e6:.3f} M, "
          f"optimizer state {state['lora'] / 2**20:.2f} MiB (compile {lora_compile:.1f} s)")
    print(f"  LoRA / full: step time {med['lora'] / med['full']:.2f}x, optimizer state "
          f"{state['lora'] / state['full']:.4f}x; loss {loss_lora:.4f} vs {loss_full:.4f} (B = 0: equal)")
    print(json.dumps(dict(bench="train_step_lora", preset=args.preset, rank=args.lora, reps=args.reps,
                          full_s=med["full"], lora_s=med["lora"], time_ratio=med["lora"] / med["full"],
                          opt_state_bytes=state, trainable=trainable, loss=dict(full=loss_full, lora=loss_lora),
                          compile_s=dict(full=full_compile, lora=lora_compile), times=times)))
    return 0


def torch_step(hf_model, ids, mask, pixels, grid, comp, comp_mask, generations: int):
    """A closure running one TRL-style forward + backward; returns (loss, log-probs [N, Tc])."""
    import torch
    g = generations
    tc = comp.shape[1]
    full = np.concatenate([np.repeat(ids, g, 0), comp.astype(np.int64)], axis=1)
    full_mask = np.concatenate([np.repeat(mask, g, 0), comp_mask.astype(np.int64)], axis=1)
    per_image = int(np.prod(grid[0]))
    # Each row carries its prompt's image: prompt p's patches, G times, in row order.
    px = np.concatenate([pixels[p * per_image:(p + 1) * per_image] for p in range(ids.shape[0]) for _ in range(g)])
    t = {"input_ids": torch.from_numpy(full), "attention_mask": torch.from_numpy(full_mask),
         "pixel_values": torch.from_numpy(px), "image_grid_thw": torch.from_numpy(np.repeat(grid, g, 0)),
         "mm_token_type_ids": torch.from_numpy((full == hf_model.config.image_token_id).astype(np.int64))}
    target = torch.from_numpy(comp.astype(np.int64))
    weight = torch.from_numpy(comp_mask.astype(np.float32))

    def step():
        hf_model.zero_grad(set_to_none=True)
        logits = hf_model(**t, logits_to_keep=tc + 1).logits[:, :-1]  # position j predicts token j + 1
        lp = torch.gather(torch.log_softmax(logits.float(), dim=-1), -1, target[..., None])[..., 0] * weight
        loss = lp.sum()
        loss.backward()
        return loss.detach(), lp.detach()
    return step


def grad_norm_torch(hf_model) -> float:
    return float(sum(float((p.grad.double() ** 2).sum()) for p in hf_model.parameters() if p.grad is not None)) ** 0.5


def grad_norm_jax(grads) -> float:
    import jax
    return float(sum(float(np.sum(np.asarray(x, np.float64) ** 2)) for x in jax.tree.leaves(grads))) ** 0.5


def main(argv=None) -> int:
    from mmjax.models.attention import IMPLEMENTATIONS
    from mmjax.models.remat import REMAT_POLICIES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--generations", type=int, default=4, help="G completions per prompt")
    ap.add_argument("--image", type=int, default=448, help="square image side in pixels (448 or 224)")
    ap.add_argument("--text", type=int, default=32, help="text tokens per prompt (besides the image's)")
    ap.add_argument("--completion", type=int, default=64, help="tokens per completion")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attention", default="auto", choices=IMPLEMENTATIONS)
    ap.add_argument("--remat", default="none", choices=REMAT_POLICIES, help="decoder layers")
    ap.add_argument("--vision-remat", default="none", choices=REMAT_POLICIES, help="ViT blocks")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, 1 rep: a smoke test")
    ap.add_argument("--lora", type=int, default=0, metavar="RANK",
                    help="instead: the optimizer step with LoRA adapters of this rank against full fine-tuning")
    args = ap.parse_args(argv)
    if args.quick:
        args.preset, args.image, args.text, args.completion, args.reps, args.gemm_n = "tiny", 56, 8, 8, 1, 256
        args.generations = min(args.generations, 2)

    import jax
    import jax.numpy as jnp
    import torch
    from mmjax.models import qwen2_5_vl

    cfg = qwen2_5_vl.preset(args.preset)
    hf_model, model = common.build_pair(cfg, attention=args.attention, remat=args.remat,
                                        vision_remat=args.vision_remat)
    p, g, tc = args.prompts, args.generations, args.completion
    ids, mask, pixels, grid = common.prompt_inputs(cfg, p, args.image, args.text)
    comp, comp_mask = common.completions(cfg, p * g, tc)
    # Host-side input preparation (the data pipeline's job) stays out of both timings.
    batch = jax.device_put(model.prepare(ids, mask, pixels, grid))
    comp_j, mask_j = jnp.asarray(comp), jnp.asarray(comp_mask)
    params = model.params

    if args.lora:
        return lora_main(args, model, batch, comp_j, mask_j, g)
    step, compile_s = common.compile_jitted(mmjax_step(model, g), params, batch, comp_j, mask_j)
    run_mm = lambda: jax.block_until_ready(step(params, batch, comp_j, mask_j))
    run_hf = torch_step(hf_model, ids, mask, pixels, grid, comp, comp_mask, g)

    # Warm-up, and the check that both sides compute the same thing.
    (loss_mm, lp_mm), grads = run_mm()
    loss_hf, lp_hf = run_hf()
    lp_err = float(np.abs(np.asarray(lp_mm) - lp_hf.numpy()).max())
    gn_mm, gn_hf = grad_norm_jax(grads), grad_norm_torch(hf_model)
    del grads

    times = {"mmjax": [], "torch": []}
    gemm_probe, rates = common.gemm_probe(args.gemm_n), []
    # Interleaved, the GEMM rate included: load drift on a shared machine hits all alike.
    # (Measured once after the loop, the rate moved 105-186 GFLOP/s between two runs whose
    # step times agreed within 3%.)
    for _ in range(args.reps):
        rates += [gemm_probe() for _ in range(3)]
        times["mmjax"] += common.timed(run_mm, 1)
        times["torch"] += common.timed(run_hf, 1)
    med = {k: common.median(v) for k, v in times.items()}
    gemm = common.median(rates)

    groups = common.param_groups(params, cfg)
    patches = int(np.prod(grid[0]))
    shape = dict(prompts=p, prompt_len=ids.shape[1], generations=g, completion_len=tc, patches_per_prompt=patches)
    counts = {"mmjax": common.logprob_update_counts(cfg, shared_prompt=True, **shape),
              "torch": common.logprob_update_counts(cfg, shared_prompt=False, **shape)}
    flops = {k: common.update_flops(groups, **c) for k, c in counts.items()}
    ideal = {k: f / gemm for k, f in flops.items()}
    ratio = med["torch"] / med["mmjax"]
    vs_ideal = med["mmjax"] / ideal["mmjax"]

    print(f"train step {args.preset} (fp32): {p} prompts x G={g}, prompt {ids.shape[1]} tokens "
          f"({args.image}px image = {patches} patches, {ids.shape[1] - args.text} image+marker tokens, "
          f"{args.text} text), completions {tc} tokens; attention {args.attention}, remat {args.remat}, "
          f"vision remat {args.vision_remat}; reps {args.reps}; {jax.devices()[0].platform}, "
          f"torch {torch.__version__} {torch.get_num_threads()} threads")
    print(f"  params {common.fmt_params(groups['total'])}: layers {common.fmt_params(groups['layers'])}, head "
          f"{common.fmt_params(groups['head'])}, vision {common.fmt_params(groups['vision'])} + merger "
          f"{common.fmt_params(groups['merger'])}, embedding {common.fmt_params(groups['embed'])} (a lookup)")
    for k in ("mmjax", "torch"):
        c = counts[k]
        print(f"  tokens {k:5s}: text {c['text_tokens']}, head {c['head_tokens']}, patches {c['patches']}, "
              f"merged {c['merged']} -> 6ND {flops[k] / 1e9:.1f} GFLOP, ideal {ideal[k] * 1e3:.0f} ms "
              f"at the GEMM rate")
    print(f"  GEMM rate (jax fp32 {args.gemm_n}^3, {len(rates)} products between the steps): median "
          f"{gemm / 1e9:.1f} GFLOP/s, range {min(rates) / 1e9:.0f}-{max(rates) / 1e9:.0f}")
    print(f"  torch eager autograd (sdpa): median {med['torch'] * 1e3:.0f} ms "
          f"({med['torch'] / ideal['torch']:.2f}x its own ideal)")
    print(f"  mmjax (jit; compile {compile_s:.1f} s apart): median {med['mmjax'] * 1e3:.0f} ms")
    print(f"  check: max |logprob diff| {lp_err:.1e}, loss {float(loss_mm):.4f} vs {float(loss_hf):.4f}, "
          f"grad norm {gn_mm:.5g} vs {gn_hf:.5g}")
    print(f"  ratio torch / mmjax: {ratio:.2f}x (target >= 1.0x); mmjax step / 6ND ideal: {vs_ideal:.2f}x "
          f"(target <= 1.5x), model FLOP utilisation {1 / vs_ideal:.0%} of the GEMM rate")
    print(json.dumps(dict(bench="train_step", preset=args.preset, prompts=p, generations=g,
                          prompt_len=int(ids.shape[1]), completion_len=tc, image_px=args.image,
                          attention=args.attention, remat=args.remat, vision_remat=args.vision_remat,
                          reps=args.reps, mmjax_s=med["mmjax"], torch_s=med["torch"], compile_s=compile_s,
                          ratio=ratio, gemm_flops=gemm, gemm_rates=rates, params=groups, tokens=counts, flops_6nd=flops,
                          mmjax_over_ideal=vs_ideal, logprob_max_diff=lp_err,
                          grad_norm=dict(mmjax=gn_mm, torch=gn_hf), times=times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
