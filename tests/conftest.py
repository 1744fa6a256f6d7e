import os
import sys

import pytest

# Test helpers (tests/models/oracle.py, ...) are imported by name from any test directory.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "models"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "rl"))  # the multi-process launcher
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
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
        fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {fast}".strip()


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
