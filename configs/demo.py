"""The default job: a tiny random Qwen2.5-VL end to end on CPU (seconds, no downloads).

    python -m mmjax.main --config configs/demo.py --workdir /tmp/mmjax_demo
    python -m mmjax.main --config configs/demo.py --config.model.preset=bench
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "demo"  # which job mmjax.main runs
    c.seed = 0  # params init and sampling (mmjax convention)

    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # mmjax.models.qwen2_5_vl.config.PRESETS; BENCH.md "tiny"
    c.model.hf_dir = ""  # a Hugging Face Qwen2.5-VL folder instead of a random preset
    c.model.dtype = "float32"  # compute/param dtype: float32 | bfloat16

    c.data = ml_collections.ConfigDict()
    c.data.image = "astronaut"  # a photo bundled with scikit-image (skimage.data.<name>)
    c.data.question = "What is in this picture?"
    c.data.min_pixels = 56 * 56  # Qwen2VLImageProcessor default
    c.data.max_pixels = 224 * 224  # kept small so the CPU demo is quick (HF default 28*28*1280)

    c.sample = ml_collections.ConfigDict()
    c.sample.max_new_tokens = 16
    c.sample.temperature = 0.0  # greedy
    if arg:
        c.model.preset = arg
    return c
