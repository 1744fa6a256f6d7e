"""Evaluation on local benchmark files: greedy answers, scored with mmjax's checkers.

    python -m mmjax.main --config configs/eval.py --workdir /tmp/eval \
        --config.model.hf_dir=/models/Qwen2.5-VL-7B-Instruct \
        --config.eval.benchmarks.mmstar=/data/mmstar/mmstar.jsonl \
        --config.eval.benchmarks.mathvista=/data/mathvista/testmini.jsonl

Trained weights instead: `--config.init_from=<training workdir | checkpoint | HF folder>`
(mmjax.jobs.build.model); the tokenizer is config.tokenizer's (`qwen2` for a Qwen2.5-VL
checkpoint without model.hf_dir).
`configs/eval.py:tiny` is a random tiny model with the local tokenizer (recipe.shrink_to_tiny),
short answers, for smoke tests; it needs no files: its mmstar and jigsaw benchmarks are
"synthetic", a few rows of each format written from synthetic data
(mmjax.eval.synthetic_benchmarks; `eval.synthetic_rows` of them). Benchmark files given as above
replace them. A model trained to answer from `sample.allowed_tokens` answers from them here too.

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
    qa         images, prompt, solution, task (choice | math | ocr), [groups]: a held-out split in
               the training rows' layout, the prompt as training renders it
    mmmu       id, question, options (list or list literal), answer, question_type (multiple-choice |
               open), image_1 .. image_7, [subfield, topic_difficulty]: images where the question's
               "<image k>" placeholders are; option letter / math-verify against any accepted answer
    hallusionbench  category (VD | VS), subcategory, set_id, figure_id, question_id, question,
               gt_answer (0 | 1 = yes), filename (null: no figure), [visual_input]: yes / no;
               question (headline), figure and question-pair accuracy

Image paths are relative to eval.data_root ("" = each file's folder). A malformed row is
an error naming the file and line, never a skip: a skipped row would change the score.

Outputs in <workdir>/eval/: <benchmark>.jsonl (every answer, its extracted answer and
score), results.json (metrics per benchmark and per category) and results.md (one table,
then the per-category tables).
"""

from mmjax.jobs import recipe

ARGS = dict(tiny=False)
HELP = {"tiny": "a random tiny model (preset 'tiny', the local tokenizer, float32, short answers): smoke tests"}


def get_config(arg: str | None = None):
    args = recipe.parse_args(arg, "configs/eval.py", HELP, **ARGS)
    c = recipe.base()
    c.mode = "eval"
    c.tokenizer = "hf"  # the model's own tokenizer, from model.hf_dir (mmjax.jobs.build.tokenizer)
    c.model.dtype = "bfloat16"  # mmjax: inference keeps the released bf16 weights (no fp32 master copy)
    c.model.compute_dtype = "bfloat16"  # mmjax: bf16 matmuls, as the models are served

    # The eval section at its dataclasses' defaults (recipe.eval_schema: the benchmark files, then
    # mmjax.eval's ReadOptions, ScoreOptions and RunnerConfig): greedy answers up to SPEC 2.4's
    # 1024 tokens, the SPEC 2.3 system prompt, <answer> containers (SPEC 1.4). Benchmark names
    # are formats, or start with "<format>_" (mmjax.eval.benchmarks.FORMATS): a recipe may add
    # names such as "mmstar_val".
    c.eval = recipe.mode_section("eval", "eval")

    if args.tiny:
        recipe.shrink_to_tiny(c)  # the tiny random model, the local tokenizer, float32, one device
        c.model.attention = "explicit"  # short sequences on CPU
        c.data.min_pixels = 28 * 28  # small images -> few vision tokens
        c.data.max_pixels = 56 * 56
        c.data.min_vision_rows = 16
        c.eval.max_new_tokens = 8
        c.eval.batch_size = 2
        c.eval.progress = False
        # Rows in the benchmarks' own formats made from synthetic data (mmjax.jobs.build.SYNTHETIC_BENCHMARK).
        c.eval.benchmarks.mmstar = "synthetic"
        c.eval.benchmarks.jigsaw = "synthetic"
    return c
