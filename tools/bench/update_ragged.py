"""The GRPO update on ragged completions: packed rows against padded rows (issue 24).

    python tools/bench/update_ragged.py [--reps 3] [--prompts 4] [--generations 8] [--max-len 512]
    python tools/bench/update_ragged.py --quick      # tiny model, tiny shapes, 1 rep: a smoke test
    python tools/bench/update_ragged.py --preset 3b --dtype bf16 --remat full --max-len 1024 \
        --cases ragged --layouts pooled           # on a GPU: padded and pooled only, 2 programs

The BENCH.md `bench` model in float32 (--dtype bf16: params and compute in bfloat16, so a GPU runs
cuDNN attention for every layout), random; P prompts, each one 224 px image + 32 text
tokens, G completions each. Completion lengths are drawn once, seed 0, long-tailed:
1 + Geometric(p = 1 / (0.3 x max_len)), cut at max_len (mean about 0.3 of it; a few run to the
limit), and, as the second case, all at max_len (nothing to pack). The step is the gradient of
the masked sum of the completion log-probs w.r.t. all parameters:
  * padded: `completion_logprobs` over [P x G, max_len] rows (what the update ran before);
  * packed: `packed_completion_logprobs` over each prompt's completions packed by
    `mmjax.rl.packing` into R <= G rows of max_len (the same numbers: checked here too);
  * pooled: the same, with the prompts' rows pooled (`pack(pooled=True)`, grpo.packed_rows=pooled):
    the rows all prompts need together, each gathering its prompt's cache;
  * bucketed: `--chunks` micro-batches of every prompt's completions sorted by length
    (`packing.length_sorted_chunks`), each padded to the power-of-two width of its longest and
    run as its own step with the prompt (grpo.update_layout=bucketed; the time is their sum).
Calls alternate round by round after one warm-up each; medians are printed, and their ratio,
and the packed step against 6 x params x real tokens at the GEMM rate measured between the
steps (common.gemm_probe); last, the pooled ragged update's time a completion token against the
equal-length update's (no padding at all), a ratio of two of the model's own steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def ragged_lengths(rows: int, max_len: int, seed: int = 0) -> np.ndarray:
    """Long-tailed completion lengths in [1, max_len], mean about 0.3 x max_len."""
    rng = np.random.default_rng(seed)
    return np.minimum(rng.geometric(1.0 / (0.3 * max_len), size=rows), max_len)


def steps(model, g: int):
    """jit(value_and_grad) of the masked log-prob sum, padded and packed."""
    import jax
    from mmjax.models.qwen2_5_vl.logprobs import completion_logprobs, packed_completion_logprobs
    module = model.module

    def padded(params, batch, comp, mask, pos):
        lp, _ = completion_logprobs(module, params, batch, comp, mask, positions=pos, num_generations=g)
        return lp.sum(), lp

    def packed(params, batch, mask, p):
        lp, _ = packed_completion_logprobs(module, params, batch, p["tokens"], p["positions"], p["segments"],
                                           p["slot"], mask, row_prompt=p.get("row_prompt"))
        return lp.sum(), lp

    return jax.jit(jax.value_and_grad(padded, has_aux=True)), jax.jit(jax.value_and_grad(packed, has_aux=True))


def bucketed(lengths, model, batch, comp, mask, pos, args):
    """The bucketed layout's step: one compiled padded step per chunk width; (run all chunks, widths, compile s)."""
    import jax
    import jax.numpy as jnp
    from mmjax.rl import packing
    g, tc = args.generations, args.max_len
    step, _ = steps(model, g // args.chunks)
    calls, widths, compile_s = [], [], 0.0
    for rows in packing.length_sorted_chunks(lengths, g, args.chunks):
        w = packing.width_bucket(int(lengths[rows].max()), tc)
        a = (model.params, batch, jnp.asarray(comp[rows, :w]), jnp.asarray(mask[rows, :w]),
             jnp.asarray(pos[:, rows, :w]))
        compiled, seconds = common.compile_jitted(step, *a)
        calls.append((compiled, a))
        widths.append(w)
        compile_s += seconds
    run = lambda: [jax.block_until_ready(c(*a)) for c, a in calls]  # noqa: E731
    run()  # the warm-up call, as the other two layouts get
    return run, widths, compile_s


def run_case(name, lengths, model, batch, comp, args, gemm_probe, groups, prompt_len, patches):
    import jax
    import jax.numpy as jnp
    from mmjax.models.kv_cache import completion_positions
    from mmjax.rl import packing
    g, tc = args.generations, args.max_len
    mask = np.arange(tc)[None] < lengths[:, None]
    pos = np.asarray(completion_positions(batch, tc, g))
    padded_fn, packed_fn = steps(model, g)
    params, mask_j = model.params, jnp.asarray(mask)
    a_pad = (params, batch, jnp.asarray(comp), mask_j, jnp.asarray(pos))
    pad_c, pad_compile = common.compile_jitted(padded_fn, *a_pad)
    run = {"padded": lambda: jax.block_until_ready(pad_c(*a_pad))}
    (_, lp_pad), _ = run["padded"]()
    compile_s, err = {"padded": pad_compile}, {}
    packings = {"packed": packing.pack(lengths, g, tc), "pooled": packing.pack(lengths, g, tc, pooled=True)}
    rows = {layout: int(p.row.shape[0]) for layout, p in packings.items()}
    for layout in [x for x in packings if x in args.layouts]:
        p = packings[layout]
        packed_in = {"tokens": jnp.asarray(packing.packed(comp, p)),
                     "positions": jnp.asarray(packing.packed(pos.transpose(1, 2, 0), p).transpose(2, 0, 1)),
                     "segments": jnp.asarray(p.segment), "slot": jnp.asarray(p.slot)}
        if p.pooled:
            packed_in["row_prompt"] = jnp.asarray(p.prompt)
        a_pack = (params, batch, mask_j, packed_in)
        pack_c, compile_s[layout] = common.compile_jitted(packed_fn, *a_pack)
        run[layout] = lambda c=pack_c, a=a_pack: jax.block_until_ready(c(*a))
        (_, lp_pack), _ = run[layout]()
        err[layout] = float(np.abs(np.asarray(lp_pad) - np.asarray(lp_pack)).max())
    bucket_widths = []
    if "bucketed" in args.layouts:
        run["bucketed"], bucket_widths, compile_s["bucketed"] = bucketed(lengths, model, batch, comp, mask, pos, args)
    times, rates = {k: [] for k in run}, []
    for _ in range(args.reps):
        rates += [gemm_probe() for _ in range(2)]
        for layout, fn in run.items():
            times[layout] += common.timed(fn, 1)
    med = {k: common.median(v) for k, v in times.items()}
    gemm = common.median(rates)
    real = int(lengths.sum())
    merge = model.config.vision.spatial_merge_size ** 2
    flops = common.update_flops(groups, text_tokens=args.prompts * prompt_len + real, head_tokens=real,
                                patches=args.prompts * patches, merged=args.prompts * patches // merge)
    ideal = flops / gemm
    out = dict(case=name, rows=len(lengths), packed_rows=rows["packed"], pooled_rows=rows["pooled"], width=tc,
               real_tokens=real, padded_slots=len(lengths) * tc, mean_len=float(lengths.mean()),
               max_len_seen=int(lengths.max()), padded_s=med["padded"], bucket_widths=bucket_widths,
               gemm_flops=gemm, logprob_max_diff=err, compile_s=compile_s, times=times)
    for layout in args.layouts:
        out[f"{layout}_s"] = med[layout]
        out[f"{layout}_speedup"] = med["padded"] / med[layout]
        out[f"{layout}_over_ideal"] = med[layout] / ideal
    print(f"  {name}: {len(lengths)} completions, mean {lengths.mean():.0f} of {tc} tokens "
          f"({real} real of {len(lengths) * tc} padded slots) -> {rows['packed']} packed rows, {rows['pooled']} "
          f"pooled; padded {med['padded'] * 1e3:.0f} ms; GEMM {gemm / 1e9:.0f} GFLOP/s; max |logprob diff| "
          f"{max(err.values(), default=0.0):.1e}; targets: >= 2x padded ragged, >= 0.95x equal, <= 1.6x the 6ND ideal")
    for layout in args.layouts:
        extra = f" ({args.chunks} chunks, widths {bucket_widths})" if layout == "bucketed" else ""
        print(f"    {layout}{extra}: {med[layout] * 1e3:.0f} ms, {out[f'{layout}_speedup']:.2f}x padded, "
              f"{out[f'{layout}_over_ideal']:.2f}x the 6ND ideal")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--text", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=2, help="micro-batches of the bucketed layout (completion_chunks)")
    ap.add_argument("--gemm-n", type=int, default=2048)
    ap.add_argument("--cases", default="ragged,equal", help="of ragged,equal (a GPU session may time ragged alone)")
    ap.add_argument("--layouts", default="packed,pooled,bucketed",
                    help="timed beside padded, of packed,pooled,bucketed (each compiles its own programs)")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="params and compute dtype")
    ap.add_argument("--remat", default="none", help="mmjax.models.remat.REMAT_POLICIES name (full for 3b / 7b)")
    ap.add_argument("--quick", action="store_true", help="tiny model, tiny shapes, 1 rep: a smoke test")
    args = ap.parse_args(argv)
    args.cases, args.layouts = args.cases.split(","), args.layouts.split(",")
    for given, allowed, flag in ((args.cases, ("ragged", "equal"), "--cases"),
                                 (args.layouts, ("packed", "pooled", "bucketed"), "--layouts")):
        if not given or not set(given) <= set(allowed):
            ap.error(f"{flag}: {','.join(given)} is not a comma list of {', '.join(allowed)}")
    if args.quick:
        args.preset, args.prompts, args.generations, args.max_len, args.image, args.text = "tiny", 2, 4, 16, 56, 8
        args.reps, args.gemm_n = 1, 256

    import jax
    import jax.numpy as jnp
    from mmjax.models import qwen2_5_vl
    cfg = qwen2_5_vl.preset(args.preset)
    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[args.dtype]
    model = qwen2_5_vl.Qwen2_5_VL.from_config(cfg, seed=0, dtype=dtype, remat=args.remat)
    ids, mask, pixels, grid = common.prompt_inputs(cfg, args.prompts, args.image, args.text)
    batch = jax.device_put(model.prepare(ids, mask, pixels, grid))
    rows = args.prompts * args.generations
    comp, _ = common.completions(cfg, rows, args.max_len)
    groups = common.param_groups(model.params, cfg)
    gemm_probe = common.gemm_probe(args.gemm_n, dtype=jnp.dtype(dtype).name)
    print(f"update_ragged {args.preset} ({args.dtype}, remat {args.remat}): {args.prompts} prompts x G={args.generations}, prompt "
          f"{ids.shape[1]} tokens ({args.image} px image), completions up to {args.max_len}; reps {args.reps}; "
          f"{jax.devices()[0].platform}")
    cases = [run_case(name, lengths, model, batch, comp, args, gemm_probe, groups, ids.shape[1], int(np.prod(grid[0])))
             for name, lengths in (("ragged", ragged_lengths(rows, args.max_len)),
                                   ("equal", np.full(rows, args.max_len))) if name in args.cases]
    # The packed ragged update's time a completion token against the equal-length (padding-free) update's,
    # both the model's own steps in this run: how close packing gets to no padding, whatever the GEMM probe
    # read (the prompts' fixed cost counts against the ragged case's fewer tokens).
    per_token = None
    if len(cases) == 2 and "pooled" in args.layouts:
        ragged, equal = cases
        per_token = (ragged["pooled_s"] / ragged["real_tokens"]) / (equal["pooled_s"] / equal["real_tokens"])
        print(f"  pooled ragged update a completion token: {per_token:.2f}x the equal-length update's")
    print(json.dumps(dict(bench="update_ragged", preset=args.preset, dtype=args.dtype, remat=args.remat,
                          prompts=args.prompts,
                          generations=args.generations, max_len=args.max_len, reps=args.reps,
                          pooled_per_token_vs_equal=per_token, cases=cases)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
