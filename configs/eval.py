"""Evaluation on local benchmark files: greedy answers, scored with mmjax's checkers.

    python -m mmjax.main --config configs/eval.py --workdir /tmp/eval \
        --config.model.hf_dir=/models/Qwen2.5-VL-7B-Instruct \
        --config.eval.benchmarks.mmstar=/data/mmstar/mmstar.jsonl \
        --config.eval.benchmarks.mathvista=/data/mathvista/testmini.jsonl

Trained weights instead: `--config.init_from=<training workdir | checkpoint | HF folder>`
(mmjax.jobs.setup.model); the tokenizer is config.tokenizer's (`qwen2` for a Qwen2.5-VL
checkpoint without model.hf_dir).
`configs/eval.py:tiny` is a random tiny model with the local tokenizer, for smoke tests.

Benchmark files: JSON lines plus image files, one reader per format, named by the
benchmark's name (or its part before the first "_"); fields as the public releases name
them (full list and rules: `mmjax.eval.benchmarks`):

    mathvista  pid, question, image, answer, question_type (multi_choice | free_form),
               choices (multi_choice), [answer_type, precision, unit, metadata{category,
               task, skills}]: option letter / math-verify
    ocrbench   question, answer(s) (a string or a list of accepted strings), image(_path),
               [type, dataset_name]: OCR match
    mmstar     question (with its options), answer (letter), image, [category, l2_category]
    mmvp       question, options, answer, image, pair_id: pair accuracy
    da2k       image, point1, point2 ([row, col]), closer_point (point1 | point2), [category]
    jigsaw     image, [rows, cols]: cut by mmjax's image jigsaw (SPEC 1.1), solve rate

Image paths are relative to eval.data_root ("" = each file's folder). A malformed row is
an error naming the file and line, never a skip: a skipped row would change the score.

Outputs in <workdir>/eval/: <benchmark>.jsonl (every answer, its extracted answer and
score), results.json (metrics per benchmark and per category) and results.md (one table,
then the per-category tables).
"""

import ml_collections

from mmjax.jobs import recipe

ARGS = {"tiny": "a random tiny model (preset 'tiny', the local tokenizer, float32, short answers): smoke tests"}


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, ARGS, "configs/eval.py")
    c = recipe.base()
    c.mode = "eval"
    c.tokenizer = "hf"  # the model's own tokenizer, from model.hf_dir (mmjax.jobs.setup.tokenizer)
    c.model.dtype = "bfloat16"  # mmjax: inference keeps the released bf16 weights (no fp32 master copy)
    c.model.compute_dtype = "bfloat16"  # mmjax: bf16 matmuls, as the models are served

    c.eval = ml_collections.ConfigDict()
    # name -> JSONL file ("" = not run); the name is the format, or starts with "<format>_"
    # (mmjax.eval.benchmarks.FORMATS). A recipe may add names such as "mmstar_val".
    c.eval.benchmarks = ml_collections.ConfigDict({
        "mathvista": "",  # MathVista testmini: free form (math-verify) and multiple choice
        "ocrbench": "",  # OCRBench: OCR match per type
        "mmstar": "",  # MMStar: option letter per category
        "mmvp": "",  # MMVP: pair accuracy
        "da2k": "",  # DA-2K relative depth pairs (the Visual Jigsaw evaluation)
        "jigsaw": "",  # image jigsaw solve rate (SPEC 1.1)
    })
    c.eval.data_root = ""  # image paths are relative to this ("" = each benchmark file's folder)
    c.eval.limit = 0  # first N rows of each file (0 = all; even for MMVP pairs); a smoke test, not a score
    c.eval.max_new_tokens = 1024  # SPEC 2.4's max completion (Visual Jigsaw trains with 2048)
    c.eval.temperature = 0.0  # 0 = greedy (mmjax.models.sampling.SamplingParams)
    c.eval.top_p = 1.0  # only with temperature > 0
    c.eval.seed = 0  # sampling keys (temperature > 0) and the jigsaw permutations
    c.eval.batch_size = 8  # prompts per generate call (mmjax.eval.runner)
    c.eval.container = "answer"  # SPEC 1.4: answer (paper) | boxed (released Visual Jigsaw code)
    c.eval.system_prompt = True  # SPEC 2.3 system prompt asking for <think> and the container
    c.eval.jigsaw_rows = 3  # SPEC 1.1 default grid, for jigsaw rows without rows / cols
    c.eval.jigsaw_cols = 3
    c.eval.jigsaw_think = True  # a solve needs the SPEC 1.4 format, as training's jigsaw_exact
    c.eval.math_timeout_seconds = 2.0  # one math-verify check (mmjax.rewards.math_check.MathBudget)
    c.eval.math_workers = 2  # math-verify worker processes
    c.eval.ocr_min_ratio = 0.5  # SPEC 2.3 fuzzy-match threshold (mmjax.rewards.ocr)
    c.eval.ocr_allow_substring = True  # SPEC 2.3 / released reward: substring either way counts
    c.eval.progress = True  # a tqdm bar per benchmark

    if "tiny" in args:
        c.tokenizer = "tiny"  # mmjax.processing.tiny_tokenizer, offline
        c.model.preset = "tiny"  # BENCH.md tiny, random weights
        c.model.dtype = "float32"
        c.model.compute_dtype = ""
        c.model.attention = "explicit"  # short sequences on CPU
        c.data.min_pixels = 28 * 28  # small images -> few vision tokens
        c.data.max_pixels = 56 * 56
        c.data.min_vision_rows = 16
        c.eval.max_new_tokens = 8
        c.eval.batch_size = 2
        c.eval.progress = False
    return c
