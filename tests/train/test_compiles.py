"""CompileWatch: compiles counted per step, a late new bucket warned about once."""

import logging

import jax
import numpy as np
import pytest

from mmjax.train import compiles as compiles_mod
from mmjax.train.compiles import CompileWatch

LOGGER = "mmjax.train.compiles"


def _late_warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


def _bucketed_step():
    # A fresh jitted function per test, so no test finds another's executables in the jit cache.
    @jax.jit
    def bucketed_step(tokens, scale):
        return (tokens * scale).sum(axis=-1)
    return bucketed_step


def _bucket(length, rows=4):  # numpy inputs: making them compiles nothing
    return np.ones((rows, length), np.float32)


SCALE = np.float32(2.0)


def test_a_late_new_bucket_is_counted_and_warned_about_once(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    counts = []
    with CompileWatch(warmup_steps=2) as watch:
        for step, length in enumerate([16, 16, 16, 32, 32, 16], start=1):
            step_fn(_bucket(length), SCALE).block_until_ready()
            counts.append(watch.step_done(step))
            if step == 3:
                assert _late_warnings(caplog) == []
        assert watch.total == 2
    assert counts == [1, 0, 0, 1, 0, 0]

    warnings = _late_warnings(caplog)
    assert len(warnings) == 1, warnings
    message = warnings[0]
    assert "step 4" in message
    assert "jit(bucketed_step)" in message
    assert "f32[4,32]" in message  # the new shape
    assert "arg 0: f32[4,32] (was f32[4,16])" in message  # what changed against the known bucket


def test_compiles_during_warm_up_do_not_warn(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    with CompileWatch(warmup_steps=2) as watch:
        step_fn(_bucket(16), SCALE)
        assert watch.step_done(1) == 1
        step_fn(_bucket(24), SCALE)  # a second bucket, still within warm-up
        assert watch.step_done(2) == 1
        step_fn(_bucket(24), SCALE)
        assert watch.step_done(3) == 0
    assert _late_warnings(caplog) == []


def test_warm_up_counts_calls_not_step_numbers(caplog):
    # A resumed run starts at a high step number and compiles everything again: no warning.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    with CompileWatch(warmup_steps=1) as watch:
        step_fn(_bucket(8), SCALE)
        assert watch.step_done(1001) == 1
    assert _late_warnings(caplog) == []


def test_compiles_on_another_thread_are_counted(caplog):
    import threading

    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    with CompileWatch(warmup_steps=0) as watch:
        worker = threading.Thread(target=lambda: step_fn(_bucket(12), SCALE).block_until_ready())
        worker.start()
        worker.join()
        assert watch.step_done(1) == 1
    (message,) = _late_warnings(caplog)
    assert "jit(bucketed_step)" in message and "f32[4,12]" in message


def test_listeners_and_logger_are_restored_after_the_watch():
    from jax._src import monitoring  # jax.monitoring has no public getter

    pxla = logging.getLogger(compiles_mod._PXLA_LOGGER)
    level, filters = pxla.level, list(pxla.filters)
    duration_listeners = monitoring.get_event_duration_listeners()
    with CompileWatch():
        with CompileWatch():  # two watches share one set of listeners
            assert len(monitoring.get_event_duration_listeners()) == len(duration_listeners) + 1
    assert monitoring.get_event_duration_listeners() == duration_listeners
    assert pxla.level == level and pxla.filters == filters


def test_the_shape_capture_lets_no_debug_record_through(caplog):
    # Opening the pxla logger to DEBUG must not make JAX's "Compiling ..." lines reach handlers.
    caplog.set_level(logging.INFO)  # the root logger and caplog's handler take INFO and above
    step_fn = _bucketed_step()
    with CompileWatch() as watch:
        step_fn(_bucket(20), SCALE)
        assert watch.step_done(1) == 1
        assert watch.last_step_events[0].shapes == ("f32[4,20]", "f32[]")
    assert not [r for r in caplog.records if r.name == compiles_mod._PXLA_LOGGER]


def test_step_done_outside_the_watch_is_an_error():
    with pytest.raises(RuntimeError, match="outside"):
        CompileWatch().step_done(1)


@pytest.fixture
def fresh_persistent_cache(tmp_path):
    """The persistent compilation cache in an empty directory, writing every executable;
    the session's cache (tests/conftest.py) and its thresholds are restored afterwards."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ["jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes"]
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    cc.reset_cache()
    try:
        yield tmp_path / "xla-cache"
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
        cc.reset_cache()


def test_an_executable_loaded_from_the_persistent_cache_counts_as_a_compile(fresh_persistent_cache, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    with CompileWatch(warmup_steps=1) as watch:
        step_fn(_bucket(16), SCALE)
        assert watch.step_done(1) == 1
        assert not watch.last_step_events[0].cached  # compiled, and written to the cache
        assert any(fresh_persistent_cache.iterdir())

        jax.clear_caches()  # as a restarted process would: only the persistent cache holds it
        step_fn(_bucket(16), SCALE)
        assert watch.step_done(2) == 1
        (event,) = watch.last_step_events
        assert event.cached and event.function == "jit(bucketed_step)"
    (message,) = _late_warnings(caplog)
    assert "step 2" in message and "persistent compilation cache" in message
    assert "the same shapes as an earlier compile" in message


def test_a_function_first_compiled_after_warm_up_is_named_as_such(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()

    @jax.jit
    def late_eval(tokens, scale):  # functions are told apart by name (JAX's module name)
        return tokens.mean() * scale
    with CompileWatch(warmup_steps=1) as watch:
        step_fn(_bucket(16), SCALE)
        watch.step_done(1)
        late_eval(_bucket(16, rows=2), SCALE)
        assert watch.step_done(2) == 1
    (message,) = _late_warnings(caplog)
    assert "jit(late_eval) first compiled with argument shapes (f32[2,16], f32[])" in message


def test_late_warnings_stop_at_max_warnings(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    step_fn = _bucketed_step()
    with CompileWatch(warmup_steps=0, max_warnings=2) as watch:
        for step, length in enumerate([3, 5, 7, 9], start=1):
            step_fn(_bucket(length), SCALE)
            assert watch.step_done(step) == 1  # still counted
    warnings = _late_warnings(caplog)
    assert len(warnings) == 2
    assert "No further late compiles will be warned about" in warnings[-1]
