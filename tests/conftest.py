import os
import sys

import pytest

# Test helpers (tests/models/oracle.py, ...) are imported by name from any test directory.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "rl"))  # the multi-process launcher
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    if not hasattr(config, "workerinput") and hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist hands files out in LONGEST_FIRST's order
    # One persistent XLA compilation cache per test session, shared by the xdist workers and
    # the subprocesses tests start (CLI runs, killed-and-resumed jobs, multi-process workers):
    # a job started again compiles nothing it compiled before. Per session, so no entry
    # outlives the code that wrote it; a torn entry (a SIGKILLed writer) is only a warning
    # and a recompile. In-process compile counts (`_cache_size`) are unaffected.
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ and not hasattr(config, "workerinput"):
        import tempfile
        config._mmjax_jax_cache = tempfile.mkdtemp(prefix="mmjax-test-xla-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config._mmjax_jax_cache
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # The tiny test models spend far more time in XLA's compiler than in running: LLVM's
    # optimisation passes are skipped (MMJAX_TEST_XLA_OPT=1 keeps them). This changes how fast
    # the code runs, not what it computes; the processes tests start inherit it (XLA_FLAGS).
    if os.environ.get("MMJAX_TEST_XLA_OPT", "0") != "1" and not hasattr(config, "workerinput"):
        # The fusion emitters (XLA's MLIR code generators for fused ops) cost ~20% of the compile
        # time of a tiny-model test (tests/models/test_completion_logprobs.py: 20-21 s against
        # 26-32 s); the older emitters compute the same ops.
        fast = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                "--xla_cpu_use_fusion_emitters=false")
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {fast}".strip()


# The files that take longest (seconds on 2 cores, a profiled `make test`), run first. xdist's
# --dist loadfile hands out whole files in collection order, and by default it reorders them by
# their number of tests, which puts these one-test files last: the suite then ends with one worker
# running a 3-minute file while the other is idle. Longest first leaves only short files for the
# end (the longest-processing-time rule). A file missing here only runs later; nothing is skipped.
LONGEST_FIRST = (  # seconds in a profiled `make test` (their own file's share of the suite's sum)
    "sweep/test_paradigms_grid.py",  # 187 s, 8 tiny jobs from the sweep CLI, then a killed chain
    "rl/test_multiprocess.py",  # ~150 s, 7 processes
    "rl/test_kill_resume.py",  # ~140 s, two runs SIGKILLed and resumed (demo; adaptive jigsaw + LoRA)
    "tools/test_bench_quick.py",  # ~100 s, benchmark scripts (eight in one interpreter)
    "models/test_sharded.py",  # ~80 s, one 8-device subprocess
    "rl/test_learner.py",  # 83 s
    "test_recipes.py",  # ~75 s
    "test_main.py",  # 60 s, the demo from the CLI
    "train/test_sft_multiprocess.py",  # 54 s, 3 processes
    "rl/test_packed_update.py",  # ~55 s
    "train/test_sft.py",  # 47 s
    "plan/test_plan.py",  # ~45 s, seven tiny plans (one from the CLI)
    "test_main_errors.py",  # 43 s
    "models/test_completion_logprobs.py",  # 42 s
    "rl/test_lora_run.py",  # ~40 s
    "sweep/test_paradigms.py",  # 30 s
    "models/test_precision_and_remat.py",  # 30 s
    "difficulty/test_score_job.py",  # 28 s
    "processing/test_vision_tables.py",  # 26 s
    "models/test_lora.py",  # ~25 s
    "rl/test_adaptive_jigsaw_run.py",  # ~25 s
    "models/test_attention_impls.py",  # 23 s
)


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    tests = os.path.dirname(os.path.abspath(__file__))

    def key(item):
        path = os.path.relpath(str(item.path), tests).replace(os.sep, "/")
        return rank.get(path, len(rank))
    items.sort(key=key)  # stable: the other files keep their order, and every file its tests' order


def pytest_unconfigure(config):
    path = getattr(config, "_mmjax_jax_cache", None)
    if path:
        import shutil
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sampler_prompt_lengths(monkeypatch):
    """The prompt length (after the sampler's bucketing) of every `sampler.generate` call made
    while the test runs, in call order."""
    from mmjax.models import sampler
    lengths, generate = [], sampler.generate

    def recording(*args, **kw):
        rollout = generate(*args, **kw)
        lengths.append(rollout.prompt_ids.shape[1])
        return rollout
    monkeypatch.setattr(sampler, "generate", recording)
    return lengths
