"""The TRL side of tools/bench/grpo_step.py: GRPOTrainer steps on the same model folder and data.

Runs inside TRL's own venv (never a project dependency), as a subprocess of grpo_step.py:

    python3 -m venv /tmp/trl_venv
    /tmp/trl_venv/bin/pip install "torch==2.13.0" trl transformers pillow datasets
    /tmp/trl_venv/bin/python tools/bench/trl_reference.py --model-dir M --data M/data.jsonl \
        --workdir W --steps 6 --warmup 1

The model folder, the data file and its images are written by grpo_step.py (`write_data` below
makes the data, so both sides read the same prompts and pixels). The rewards are defined here
once and imported by grpo_step.py. The work per step: 4 prompts x 4 completions
(per_device_train_batch_size 16, num_generations 4), exactly 16 new tokens (min_new_tokens =
max_completion_length, so EOS never ends a row early and both sides do equal work; with
--support, ragged: both sides sample only the given ids, EOS among them), HF
generate rollout (no vLLM), everything fp32 on CPU; TRL defaults otherwise (beta 0, loss dapo,
1 iteration, lr 1e-6, ...).

Step time: time between consecutive on_step_end callbacks (rollout + rewards + loss +
backward + AdamW + logging); the first `--warmup` steps are excluded. TRL's own logged
`step_time` (training_step only) is reported too. The last stdout line is one JSON object.

transformers 5.x's Qwen2_5_VLProcessor insists on a video processor, which needs torchvision,
which does not install beside the local CPU torch: `NoVideoProcessor` accepts
video_processor=None and is otherwise the stock class, so TRL's VLM path runs unchanged.

Nothing at module level imports more than the standard library: grpo_step.py imports the
rewards and `write_data` from here in the project's venv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

PROMPT = "What colour is this image? Answer with one word."
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 220), "yellow": (230, 220, 30)}


# ---- data and rewards (shared with grpo_step.py) ---------------------------------------------


def write_data(out_dir: str, n: int, side: int, seed: int = 0) -> str:
    """n rows of PROMPT + one side x side image of one of 4 colours (+ noise); returns data.jsonl.

    Row layout is mmjax's (prompt, images, solution); the TRL side reads the same file.
    """
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    path = os.path.join(out_dir, "data.jsonl")
    with open(path, "w") as f:
        for i in range(n):
            colour = names[i % len(names)]
            pixels = np.array(COLOURS[colour])[None, None, :] + rng.normal(0, 20, (side, side, 3))
            name = f"img_{i:03d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(out_dir, name))
            f.write(json.dumps({"id": str(i), "prompt": PROMPT, "images": [name], "solution": colour}) + "\n")
    return path


def _text(completion) -> str:
    """A completion as text: TRL gives conversational completions as [{"role", "content"}]."""
    if isinstance(completion, list):
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content
    return completion


def suppressed(config, support: str) -> list[int]:
    """Every token id of the model's vocabulary outside `support` ("3,17,...")."""
    keep = {int(i) for i in support.split(",")}
    vocab = getattr(config, "text_config", config).vocab_size
    return [i for i in range(vocab) if i not in keep]


def colour_reward(completions, targets=None, answer=None, **_):
    """1 if the completion names the image's colour. mmjax passes targets, TRL the `answer` column."""
    wanted = targets if targets is not None else answer
    return [1.0 if a in _text(c).lower() else 0.0 for c, a in zip(completions, wanted)]


def length_reward(completions, targets=None, **_):
    """-|words - 3| / 10: every group gets reward variance, so no update is a no-op."""
    return [-abs(len(_text(c).split()) - 3) / 10.0 for c in completions]


# ---- TRL ----------------------------------------------------------------------------------------


def build_processor(model_dir: str):
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil

    class NoVideoProcessor(Qwen2_5_VLProcessor):
        """Qwen2_5_VLProcessor, except that video_processor=None passes the class check."""

        def check_argument_for_proper_class(self, name, arg):
            if name == "video_processor" and arg is None:
                return None
            return super().check_argument_for_proper_class(name, arg)

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    return NoVideoProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(model_dir), tokenizer=tok,
                            video_processor=None, chat_template=tok.chat_template)


def read_dataset(path: str):
    """data.jsonl -> a datasets.Dataset in TRL's conversational VLM layout (prompt, image, answer)."""
    from datasets import Dataset
    from PIL import Image
    root = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            image = Image.open(os.path.join(root, r["images"][0])).convert("RGB")
            rows.append({"prompt": [{"role": "user", "content": r["prompt"]}], "image": image,
                         "answer": r["solution"]})
    return Dataset.from_list(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", required=True, help="data.jsonl written by write_data")
    ap.add_argument("--workdir", required=True, help="GRPOTrainer output_dir (nothing is saved there)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps in all, warm-up included")
    ap.add_argument("--warmup", type=int, default=1, help="first steps left out of the median")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every visible core)")
    ap.add_argument("--support", default="",
                    help="ragged completions: comma-separated token ids sampling may pick (EOS among them; every "
                         "other id suppressed), instead of fixed-length rows")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")

    import torch
    import transformers
    import trl
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    start = time.perf_counter()
    model = AutoModelForImageTextToText.from_pretrained(args.model_dir, dtype=torch.float32)
    processor = build_processor(args.model_dir)
    config = GRPOConfig(
        output_dir=args.workdir,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        # Fixed-length completions: EOS is masked until the last token, as on the mmjax side. Ragged
        # (--support): every id outside the shared support suppressed, EOS in it, so both sides sample one law.
        generation_kwargs=({"min_new_tokens": args.max_completion_length} if not args.support else
                           {"suppress_tokens": suppressed(model.config, args.support)}),
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.last, self.times = None, []

        def on_train_begin(self, a, state, control, **kw):
            self.last = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=[colour_reward, length_reward], args=config,
                          train_dataset=read_dataset(args.data), processing_class=processor, callbacks=[timer])
    setup_s = time.perf_counter() - start
    trainer.train()

    logs = [h for h in trainer.state.log_history if "step_time" in h]
    timed = timer.times[args.warmup:]
    resolved = {k: getattr(trainer.args, k, None) for k in (
        "beta", "loss_type", "num_iterations", "learning_rate", "scale_rewards", "epsilon", "temperature",
        "top_p", "top_k", "steps_per_generation", "generation_batch_size", "gradient_checkpointing",
        "lr_scheduler_type", "weight_decay", "max_grad_norm", "optim")}
    own = [h["step_time"] for h in logs[args.warmup:]]
    out = {
        "step_s": statistics.median(timed), "step_s_all": timer.times, "setup_s": setup_s,
        "trl_step_time_s": statistics.median(own) if own else None,
        "completion_length": [h.get("completions/mean_length") for h in logs],
        "reward": [h.get("reward") for h in logs],
        "params": sum(p.numel() for p in model.parameters()), "threads": threads, "config": resolved,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
    }
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
