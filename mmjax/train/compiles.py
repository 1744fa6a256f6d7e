"""Count XLA compiles per training step, and warn about the ones that come late.

A compile in the middle of a run (a new bucket, a new batch shape, a changed static argument)
stalls that step for seconds to minutes and is otherwise invisible. A training loop wraps its
steps in a CompileWatch and logs what `step_done` returns as `perf/compiles`:

    compiles = CompileWatch(warmup_steps=2)
    with compiles:
        while step < max_steps:
            ...one step...
            metrics["perf/compiles"] = compiles.step_done(step)   # compiles during this step
            metrics["perf/compiles_total"] = compiles.total

Every compile after the first `warmup_steps` calls of `step_done` is warned about once per
(function, argument shapes), naming the step, the function (JAX's module name, e.g.
`jit(train_step)`), and its argument shapes; for a function compiled before, the arguments whose
shapes changed. Warm-up counts the calls of this watch, not the step numbers, so a run resumed
at step 1000 (which compiles everything again) warms up too. A load from the persistent
compilation cache counts as a compile. How JAX's events and logs are read (jax 0.10/0.11): `_Hub`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import jax

log = logging.getLogger(__name__)

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_PXLA_LOGGER = "jax._src.interpreters.pxla"
_COMPILING_MSG = "Compiling %s with global shapes and types"

_MAX_SHAPES_SHOWN = 12  # argument shapes listed in a warning (a train step has one per param)
_MAX_HISTORY = 16  # distinct shape tuples remembered per function, to diff a recompile against


@dataclasses.dataclass(frozen=True)
class CompileEvent:
    """One new executable: `function` is JAX's module name (e.g. "jit(train_step)"), `shapes` its
    flattened argument shapes ("f32[8,128]", ...) or None when JAX did not log them, `seconds` the
    time spent compiling (or loading from the persistent cache: `cached`)."""

    function: str
    shapes: tuple[str, ...] | None
    seconds: float
    cached: bool = False


def _short(aval: Any) -> str:
    try:
        return aval.str_short(short_dtypes=True)
    except Exception:  # noqa: BLE001 - any aval-like object still gets a name
        return str(aval)


class _ShapeCapture(logging.Filter):
    """On the pxla logger: remembers the avals of each "Compiling ..." record; lets a record
    through only if the logger's level before the hub opened it to DEBUG would have."""

    def __init__(self, hub: _Hub, logger: logging.Logger, prev_level: int):
        super().__init__()
        self.hub, self.logger, self.prev_level = hub, logger, prev_level

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.msg, str) and record.msg.startswith(_COMPILING_MSG) and \
                    isinstance(record.args, tuple) and len(record.args) >= 2:
                name, avals = record.args[0], record.args[1]
                self.hub.lowered(str(name), tuple(_short(a) for a in avals))
        except Exception:  # noqa: BLE001 - never break a compile over a log record
            pass
        level = self.prev_level
        if level == logging.NOTSET:
            level = self.logger.parent.getEffectiveLevel() if self.logger.parent else logging.WARNING
        return record.levelno >= level


class _Hub:
    """The one set of JAX listeners, installed while at least one CompileWatch is active, and
    fanning each compile out to the active watches. Compiles are counted on whatever thread
    they happen; counts are kept under a lock.

    How compiles are seen (jax 0.10/0.11):

    - Counting: the `jax.monitoring` duration event "/jax/core/compile/backend_compile_duration".
      JAX records it around `compiler.compile_or_get_cached` each time a jit cache miss needs a new
      executable (pxla._cached_compilation), with `fun_name=` the module name. It spans the
      persistent compilation cache lookup, so it fires for a real XLA compile and for an executable
      loaded from JAX_COMPILATION_CACHE_DIR alike: both are a jit cache miss that stalls the step, and
      counting them the same keeps `perf/compiles` independent of the cache's state. The tracing
      event ("/jax/core/compile/jaxpr_trace_duration") would be wrong: it also fires for tracing that
      compiles nothing (eval_shape, `.lower()`, a cached trace lowered for new shardings is missed),
      and the cache events ("/jax/compilation_cache/cache_hits", "cache_misses") fire only when the
      persistent cache is enabled. A cache hit ("/jax/compilation_cache/cache_hits", recorded inside
      the compile's span, on the same thread) only marks the event as `cached`.
    - Shapes: the events carry no shapes. JAX logs "Compiling <module> with global shapes and types
      <avals>. Argument mapping: <shardings>." through the logger `jax._src.interpreters.pxla` right
      before lowering each new executable (at DEBUG; at WARNING with jax_log_compiles). While a watch
      is active a logging.Filter on that logger reads the record's arguments, and the logger is
      opened to DEBUG for it; the filter drops every record the logger's previous level would have
      dropped, so nothing new reaches any handler. The logger logs nothing else, so this costs one
      LogRecord per compile and nothing per step. If a JAX version stops logging this, the count is
      unaffected and warnings say the shapes are unknown.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watches: list[CompileWatch] = []
        self.local = threading.local()  # per thread: pending shapes by module name, cache-hit flag
        self.shapes_any_thread: dict[str, tuple[str, ...]] = {}
        self.capture: _ShapeCapture | None = None
        self.opened_logger = False

    # --- subscription ---------------------------------------------------------------------
    def subscribe(self, watch: CompileWatch) -> None:
        with self.lock:
            if watch in self.watches:
                raise RuntimeError("this CompileWatch is already active")
            self.watches.append(watch)
            if len(self.watches) == 1:
                self._install()

    def unsubscribe(self, watch: CompileWatch) -> None:
        with self.lock:
            if watch not in self.watches:
                return
            self.watches.remove(watch)
            if not self.watches:
                self._uninstall()

    def _install(self) -> None:
        jax.monitoring.register_event_duration_secs_listener(self.on_duration)
        jax.monitoring.register_event_listener(self.on_event)
        logger = logging.getLogger(_PXLA_LOGGER)
        self.capture = _ShapeCapture(self, logger, logger.level)
        logger.addFilter(self.capture)
        self.opened_logger = logger.getEffectiveLevel() > logging.DEBUG
        if self.opened_logger:
            logger.setLevel(logging.DEBUG)

    def _uninstall(self) -> None:
        # Unregistering asserts the listener is there: someone may have cleared JAX's listeners
        # (jax.monitoring.clear_event_listeners) meanwhile.
        for unregister, listener in ((jax.monitoring.unregister_event_duration_listener, self.on_duration),
                                     (jax.monitoring.unregister_event_listener, self.on_event)):
            try:
                unregister(listener)
            except (AssertionError, ValueError):
                pass
        logger = logging.getLogger(_PXLA_LOGGER)
        if self.capture is not None:
            logger.removeFilter(self.capture)
            if self.opened_logger and logger.level == logging.DEBUG:  # not changed since
                logger.setLevel(self.capture.prev_level)
        self.capture = None
        self.shapes_any_thread.clear()

    # --- JAX callbacks (any thread; must never raise) ---------------------------------------
    def _pending(self) -> dict[str, tuple[str, ...]]:
        pending = getattr(self.local, "pending", None)
        if pending is None:
            pending = self.local.pending = {}
        return pending

    def lowered(self, name: str, shapes: tuple[str, ...]) -> None:
        self._pending()[name] = shapes
        with self.lock:
            self.shapes_any_thread[name] = shapes

    def on_event(self, event: str, **kwargs: Any) -> None:
        if event == CACHE_HIT_EVENT:
            self.local.cache_hit = True

    def on_duration(self, event: str, duration: float, **kwargs: Any) -> None:
        if event != BACKEND_COMPILE_EVENT:
            return
        try:
            name = str(kwargs.get("fun_name", "<unknown>"))
            shapes = self._pending().pop(name, None)
            cached = bool(getattr(self.local, "cache_hit", False))
            self.local.cache_hit = False
            with self.lock:
                if shapes is None:  # lowered on another thread (`.lower()` here, `.compile()` there)
                    shapes = self.shapes_any_thread.get(name)
                self.shapes_any_thread.pop(name, None)
                watches = list(self.watches)
            compile_event = CompileEvent(name, shapes, float(duration), cached)
            for watch in watches:
                watch._record(compile_event)
        except Exception:  # noqa: BLE001 - a metrics hook must not fail a compile
            log.debug("CompileWatch: could not record a compile", exc_info=True)


_hub = _Hub()


class CompileWatch:
    """Counts XLA compiles (new executables, persistent-cache loads included) while active, per
    training step; warns once per (function, shapes) about compiles after warm-up.

    warmup_steps: how many `step_done` calls may compile without a warning (the first step
      compiles the step function, the second often a variant with donated/committed buffers).
    max_warnings: late-compile warnings this watch logs at most (a run whose shapes never settle
      would otherwise log one per step); `perf/compiles` keeps counting after that.
    """

    def __init__(self, warmup_steps: int = 2, *, max_warnings: int = 20) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.max_warnings = max_warnings
        self._lock = threading.Lock()
        self._active = False
        self._pending: list[CompileEvent] = []
        self._steps = 0
        self._total = 0
        self._total_seconds = 0.0
        self._seen: dict[str, list[tuple[str, ...] | None]] = {}  # function -> shape tuples
        self._warned: set[tuple[str, tuple[str, ...] | None]] = set()
        self._warnings = 0
        self.last_step_events: tuple[CompileEvent, ...] = ()
        self.last_step_seconds = 0.0

    # --- lifetime -----------------------------------------------------------------------------
    def start(self) -> CompileWatch:
        if self._active:
            raise RuntimeError("this CompileWatch is already active")
        _hub.subscribe(self)
        self._active = True
        return self

    def close(self) -> None:
        if self._active:
            _hub.unsubscribe(self)
            self._active = False

    def __enter__(self) -> CompileWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- counts -------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Compiles since the watch started (finished steps, and the one in progress)."""
        with self._lock:
            return self._total

    @property
    def total_seconds(self) -> float:
        with self._lock:
            return self._total_seconds

    def _record(self, event: CompileEvent) -> None:
        with self._lock:
            self._pending.append(event)
            self._total += 1
            self._total_seconds += event.seconds

    def step_done(self, step: int) -> int:
        """Ends a step: returns the number of compiles since the previous call (or the start),
        and warns about them if this is not one of the first `warmup_steps` calls."""
        if not self._active:
            raise RuntimeError("CompileWatch.step_done outside `with CompileWatch(...)`")
        with self._lock:
            events, self._pending = tuple(self._pending), []
            self._steps += 1
            late = self._steps > self.warmup_steps
        self.last_step_events = events
        self.last_step_seconds = sum(e.seconds for e in events)
        for event in events:
            history = self._seen.setdefault(event.function, [])
            if late:
                self._warn(step, event, history)
            if event.shapes not in history:
                history.append(event.shapes)
                del history[:-_MAX_HISTORY]
        return len(events)

    # --- warnings -----------------------------------------------------------------------------
    def _warn(self, step: int, event: CompileEvent, history: list[tuple[str, ...] | None]) -> None:
        key = (event.function, event.shapes)
        if key in self._warned:
            return
        self._warned.add(key)
        if self._warnings >= self.max_warnings:
            return
        self._warnings += 1
        source = "loaded from the persistent compilation cache" if event.cached else "compiled"
        log.warning(
            "XLA compile after warm-up at step %d (%s in %.2fs; warmup_steps=%d): %s %s. Compiles "
            "during training stall the step; keep shapes and static arguments fixed (pad or bucket "
            "what varies).%s",
            step, source, event.seconds, self.warmup_steps, event.function,
            _describe(event.shapes, history),
            " No further late compiles will be warned about; perf/compiles still counts them."
            if self._warnings == self.max_warnings else "")


def _shape_list(shapes: tuple[str, ...]) -> str:
    shown = ", ".join(shapes[:_MAX_SHAPES_SHOWN])
    more = len(shapes) - _MAX_SHAPES_SHOWN
    return f"({shown}{f', ... {more} more' if more > 0 else ''})"


def _describe(shapes: tuple[str, ...] | None, history: list[tuple[str, ...] | None]) -> str:
    """The new shapes, and for a recompile how they differ from the closest earlier ones."""
    if shapes is None:
        what = "with argument shapes unknown (JAX did not log them)"
        return f"recompiled {what}" if history else f"first compiled {what}"
    text = f"with argument shapes {_shape_list(shapes)}"
    known = [old for old in history if old is not None]
    if not history:
        return f"first compiled {text}"
    if shapes in known:
        return (f"recompiled {text}, the same shapes as an earlier compile (a static argument, "
                "sharding, or cleared jit cache made a new executable)")
    same_arity = [old for old in known if len(old) == len(shapes)]
    if not same_arity:
        return f"recompiled {text}; earlier: {_shape_list(known[-1])}" if known else f"recompiled {text}"
    closest = min(same_arity, key=lambda old: sum(a != b for a, b in zip(old, shapes)))
    diffs = [f"arg {i}: {new} (was {old})" for i, (old, new) in enumerate(zip(closest, shapes)) if old != new]
    shown = "; ".join(diffs[:_MAX_SHAPES_SHOWN])
    if len(diffs) > _MAX_SHAPES_SHOWN:
        shown += f"; ... {len(diffs) - _MAX_SHAPES_SHOWN} more"
    return f"recompiled {text}; changed: {shown}"
