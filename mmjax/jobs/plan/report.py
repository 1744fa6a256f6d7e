"""A plan as a table on stdout, `plan.md` and `plan.json` (bytes per device, GB = 1e9 bytes)."""

from __future__ import annotations

import dataclasses
import json
import os

from mmjax.atomic_dir import atomic_write_text
from mmjax.jobs.plan.proposals import as_flags

GB = 1e9


def _gb(n: float) -> str:
    """Bytes in GB (1e9), with enough digits to show a tiny model's figures."""
    for digits in (2, 3, 4, 5, 6):
        if abs(n) >= GB * 10 ** -digits or n == 0:
            return f"{n / GB:.{digits}f}"
    return f"{n / GB:.2e}"


def _verdict(plan) -> str:
    top = plan.peak_program()
    if plan.failed():
        names = ", ".join(f"'{p.name}'" for p in plan.failed())
        return f"**does not compile**: {names} (see the table)"
    word = "fits" if plan.fits() else "does not fit"
    return (f"**{word}**: peak {_gb(plan.peak_bytes())} GB per device in '{top.name}', against "
            f"{_gb(plan.usable_bytes)} GB usable of {_gb(plan.device_memory_bytes)} GB")


def markdown(title: str, plan, tried=()) -> str:
    p, s = plan.prompt, plan.shape
    mesh = " ".join(f"{k}={v}" for k, v in plan.mesh.items())
    lines = [f"# Plan: {title}", "",
             f"Job `{plan.job}` on {plan.devices} x {plan.platform} ({_gb(plan.device_memory_bytes)} GB each, "
             f"{_gb(plan.usable_bytes)} GB usable), mesh {mesh}.",
             f"Worst case: {s.prompts} prompts of {s.prompt_slots} slots ({len(p.images)} images, {len(p.videos)} "
             f"videos, {p.vision_tokens()} vision tokens, {p.text_tokens} text tokens each; {s.patch_rows} patch "
             "rows), "
             f"{s.completions} completions of {s.completion_slots} tokens"
             f"{f', updated in {s.completion_chunks} chunks' if s.completion_chunks > 1 else ''}.", "",
             f"Verdict: {_verdict(plan)}.",
             f"The arithmetic's peak (mmjax.jobs.plan.analytic: state + gradients + activations, or state + KV cache): "
             f"{_gb(plan.arithmetic_peak())} GB, which "
             f"{'fits' if plan.arithmetic_peak() <= plan.usable_bytes else 'does not fit'}."]
    if plan.consumers():
        lines.append("Largest consumers at the peak: " + "; ".join(f"{what} {_gb(b)} GB"
                                                                    for what, b in plan.consumers()) + ".")
    lines += ["", "GB per device (held: the job's state on the device meanwhile, its arguments or not):", "",
              "| program | held | arguments | outputs | aliased | temporaries | peak | TFLOP | compile s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for q in plan.programs:
        if q.error:
            lines.append(f"| {q.name} | does not compile: {q.error} | | | | | | | |")
        else:
            lines.append(f"| {q.name} | {_gb(q.held_bytes)} | {_gb(q.argument_bytes)} | {_gb(q.output_bytes)} | "
                         f"{_gb(q.alias_bytes)} | {_gb(q.temp_bytes)} | {_gb(q.peak_bytes)} | "
                         f"{q.flops / 1e12:.4g} | {q.compile_seconds:.1f} |")
    lines += ["", "Arithmetic (mmjax.jobs.plan.analytic), GB per device: " +
              ", ".join(f"{k} {_gb(v)}" for k, v in plan.arithmetic.items()) + ".",
              "Host RAM per process (arithmetic): " + ", ".join(f"{k} {_gb(v)} GB" for k, v in plan.host.items()) + "."]
    comparisons = plan.comparisons()
    if comparisons:
        lines += ["", "| XLA vs arithmetic | XLA GB | arithmetic GB | ratio |", "|---|---:|---:|---:|"]
        for c in comparisons:
            flag = " **differ by > 25%**" if c["disagree"] else ""
            lines.append(f"| {c['what']} | {_gb(c['xla_bytes'])} | {_gb(c['arithmetic_bytes'])} | "
                         f"{c['ratio']:.2f}{flag} |")
    if tried:
        lines += ["", "Proposals, each planned again:", "", "| overrides | peak GB | verdict |", "|---|---:|---|"]
        for text, overrides, again in tried:
            word = "fits" if again.fits() else ("does not compile" if again.failed() else "does not fit")
            lines.append(f"| `{as_flags(overrides)}` | {_gb(again.peak_bytes())} | {word} |")
    lines += ["", "Notes:"] + [f"- {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"


def as_json(title: str, plan, tried=()) -> dict:
    def one(q):
        return {"job": q.job, "platform": q.platform, "devices": q.devices, "mesh": q.mesh,
                "prompt": dataclasses.asdict(q.prompt), "shape": dataclasses.asdict(q.shape),
                "programs": [p.as_dict() for p in q.programs], "arithmetic": q.arithmetic, "host": q.host,
                "comparisons": q.comparisons(), "usable_bytes": q.usable_bytes,
                "device_memory_bytes": q.device_memory_bytes, "peak_bytes": q.peak_bytes(), "fits": q.fits(),
                "arithmetic_peak_bytes": q.arithmetic_peak(), "consumers": q.consumers(), "notes": q.notes}
    return {"title": title, **one(plan),
            "proposals": [{"change": text, "overrides": overrides, **one(again)} for text, overrides, again in tried]}


def write(workdir: str, title: str, plan, tried=()) -> tuple[str, str]:
    md, js = os.path.join(workdir, "plan.md"), os.path.join(workdir, "plan.json")
    atomic_write_text(md, markdown(title, plan, tried))
    atomic_write_text(js, json.dumps(as_json(title, plan, tried), indent=1))
    return md, js
