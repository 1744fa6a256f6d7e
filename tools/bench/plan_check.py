"""Is the plan right? The planner's per-device peak of a GRPO step against the peak its programs
reach when they run, on this CPU, for the bench model (BENCH.md, 35 M parameters).

    python tools/bench/plan_check.py [--shapes 2x8x64,4x8x128,4x8x256] [--text-tokens 256]

For each shape (prompts x G completions x completion tokens), in a fresh process: `mode=plan`'s
`make_plan` compiles the job's programs (configs/difficulty_grpo.py:tiny with the bench preset,
beta 0: no reference copy), then the process resets its peak RSS (Linux /proc/self/clear_refs),
allocates the job's state (float32 params and AdamW moments) and runs each compiled program in
the job's order on zero-filled inputs of the planned shapes, freeing each program's inputs and
outputs before the next, as the trainer's step does. Measured = peak RSS - RSS before the state
was allocated; the CPU backend reports no `memory_stats()`, so RSS it is. Printed: both peaks
and their ratio per shape, and the program the plan puts at the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(prompts: int, generations: int, length: int, text_tokens: int) -> dict:
    import importlib
    import jax
    import jax.numpy as jnp
    sys.path.insert(0, ROOT)
    from mmjax.jobs.plan import programs as programs_lib
    from mmjax.jobs.plan.options import PlanConfig
    from mmjax.jobs.plan.planner import make_plan

    config = importlib.import_module("configs.difficulty_grpo").get_config("tiny")
    with config.unlocked():
        config.model.preset, config.grpo.beta = "bench", 0.0
        config.data.batch_size, config.grpo.num_generations = prompts, generations
        config.grpo.max_completion_length = length
    programs_lib.RECORD = []
    plan = make_plan(config, PlanConfig(text_tokens=text_tokens), jax.devices()[:1], "cpu")
    assert not plan.failed(), [p.error for p in plan.failed()]

    def zeros(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended):
            return jax.random.wrap_key_data(jnp.zeros(leaf.shape + (2,), jnp.uint32))
        return jnp.zeros(leaf.shape, leaf.dtype)

    def dynamic(jitted, args, kwargs):
        """The arguments the compiled program takes: the jitted function's static ones left out."""
        info = jitted._jit_info  # noqa: SLF001  which arguments were static when it was lowered
        keep = tuple(a for i, a in enumerate(args) if i not in info.static_argnums)
        return keep, {k: v for k, v in kwargs.items() if k not in info.static_argnames}

    recorded = programs_lib.RECORD
    params_abstract = recorded[0][3][1]  # the sampler's encode / prefill take (module, params, ...)
    state_ids = {id(leaf) for leaf in jax.tree.leaves(params_abstract)}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: compiling is over, the job's run starts here
    base = _rss("VmRSS")
    state: dict[int, jax.Array] = {}

    def materialise(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if id(leaf) in state_ids:
            return state.setdefault(id(leaf), zeros(leaf))
        return zeros(leaf)

    for leaf in jax.tree.leaves(params_abstract):
        materialise(leaf)
    opt_leaves = next(r[3][1] for r in recorded if r[0] == "update: optimizer step")
    opt_state = jax.tree.map(zeros, opt_leaves)  # AdamW's moments, held from here on
    for name, compiled, jitted, args, kwargs in recorded:
        args, kwargs = dynamic(jitted, args, kwargs)
        if name == "update: optimizer step":  # params and moments are the job's own, donated
            rest = tuple(jax.tree.map(materialise, a) for a in args[2:])
            args = (jax.tree.map(materialise, args[0]), opt_state) + rest
        else:
            args = jax.tree.map(materialise, args)
        kwargs = jax.tree.map(materialise, kwargs)
        out = compiled(*args, **kwargs)
        jax.block_until_ready(out)
        del out, args, kwargs
    measured = _rss("VmHWM") - base
    top = plan.peak_program()
    return {"shape": f"{prompts}x{generations}x{length}", "planned_bytes": plan.peak_bytes(),
            "measured_bytes": measured, "ratio": measured / plan.peak_bytes(), "peak_program": top.name,
            "programs": {p.name: p.peak_bytes for p in plan.programs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="2x8x64,4x8x128,4x8x256",
                        help="prompts x G x completion tokens, comma-separated")
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        b, g, t = (int(x) for x in args.child.split("x"))
        print(json.dumps(_child(b, g, t, args.text_tokens)))
        return
    rows = []
    for shape in args.shapes.split(","):
        run = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", shape,
                              "--text-tokens", str(args.text_tokens)], capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            sys.exit(f"plan_check {shape}: failed\n{run.stderr[-3000:]}")
        row = json.loads(run.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['shape']:>12}: planned {row['planned_bytes'] / 1e6:8.1f} MB, "
              f"measured {row['measured_bytes'] / 1e6:8.1f}"
              f" MB, measured / planned {row['ratio']:.2f} (plan's peak: {row['peak_program']})", flush=True)
    print(json.dumps({"plan_check": rows}))


if __name__ == "__main__":
    main()
