"""Stopping a run cleanly on SIGTERM / SIGINT: finish the step in flight, save, exit 75.

Preemptible VMs and Slurm send SIGTERM some time before SIGKILL. A training loop asks
`StopOnSignal.reached(step)` once per step; when it says True, the loop saves a checkpoint
of that step and raises `Preempted`, which `mmjax.main` turns into exit status
`PREEMPTED_EXIT_CODE` (75, sysexits' EX_TEMPFAIL: "try again later"). A rerun on the same
workdir resumes from that checkpoint. A second signal ends the process at once (the
default action of the signal, as if no handler had been installed).

Several processes (`jax.distributed`): all of them must stop after the same step, or the
ones still stepping would wait on the others' collectives forever. JAX's preemption
service does that: `multihost_utils.reached_preemption_sync_point` turns True on every
process at one agreed step once any process was notified. Its notifier is a native
SIGTERM handler installed by `jax.distributed.initialize`; the Python handler installed
here replaces it, so on the first signal (SIGTERM or SIGINT) it calls that native handler
itself, which is how the service learns of the signal. The step each process stops at is
then the service's, never a home-made protocol's.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from typing import Self

import jax

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: the run stopped cleanly and can be resumed
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Raised by a loop that stopped on a signal after saving; `mmjax.main` exits 75 on it."""

    def __init__(self, step: int, what: str = "checkpoint"):
        super().__init__(f"stopped on a signal after step {step} ({what} saved); "
                         f"rerun the same command to resume")
        self.step = step


_NATIVE_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _native_handler(signum: int) -> int | None:
    """The address of the C-level handler installed for `signum`, or None (default, ignored).
    Python's `signal.getsignal` cannot see handlers installed by native code, such as the
    preemption notifier of `jax.distributed` (it says None), hence sigaction."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        action = ctypes.create_string_buffer(256)  # struct sigaction; the handler is its first field
        if libc.sigaction(signum, None, action) != 0:
            return None
    except (OSError, AttributeError):
        return None
    address = ctypes.c_void_p.from_buffer(action).value
    return None if address in (None, 0, 1) else address  # 0, 1: SIG_DFL, SIG_IGN


def _reinstall_native(signum: int, address: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal(signum, address)


def _preemption_service() -> bool:
    """Whether JAX's preemption service runs in this process (several processes joined)."""
    from jax._src import distributed
    return jax.process_count() > 1 and distributed.global_state.preemption_sync_manager is not None


class StopOnSignal:
    """While active, the first SIGTERM / SIGINT requests a clean stop; a second one kills.

        with StopOnSignal() as stop:
            while step < max_steps:
                ...  # one step
                stopping = stop.reached(step)      # every process, once per step
                save(step, force=stopping)
                if stopping:
                    break
        if stopping:
            raise Preempted(step)

    Outside the main thread (e.g. a loop run from a worker thread) no handler can be
    installed; `reached` then only reports the preemption service's decision.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._native: dict[int, int | None] = {}
        self._notify_service = None

    def __enter__(self) -> Self:
        self.signal = None
        self._native = {signum: _native_handler(signum) for signum in SIGNALS}
        native_sigterm = self._native[signal.SIGTERM]
        if native_sigterm is not None and _preemption_service():
            self._notify_service = _NATIVE_HANDLER(native_sigterm)
        try:
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) != self._handle:
                continue  # already signalled (now SIG_DFL) or replaced by someone else
            if handler is None and self._native.get(signum) is not None:
                _reinstall_native(signum, self._native[signum])  # e.g. JAX's notifier again
            else:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.signal = signum
        # The next signal takes the default action: a stuck step can still be killed at once.
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        log.warning("%s received: finishing the step in flight, saving a checkpoint, then exiting with "
                    "status %d (send it again to stop at once, without saving)",
                    signal.Signals(signum).name, PREEMPTED_EXIT_CODE)
        if self._notify_service is not None:
            self._notify_service(signal.SIGTERM, None, None)  # tell JAX's preemption service

    @property
    def requested(self) -> bool:
        """A signal reached this process (the agreed stop step may still lie ahead)."""
        return self.signal is not None

    def reached(self, step: int) -> bool:
        """Whether to stop after `step`. Call it once per step on every process: with
        several processes the answer is the preemption service's, the same on all of them."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            try:
                return multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError:  # the service is off (jax_enable_preemption_service=False)
                return False
        return self.requested
