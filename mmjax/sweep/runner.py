"""Running a sweep: its runs one at a time, in dependency order, each its own `mmjax.main` process.

One at a time (sequential): the runs of a grid on one host would share its accelerators; a
cluster runs the grid side by side through `--emit slurm`. For each run, in order:
- its state file says done (mmjax.sweep.state): skipped, "already done";
- a run it depends on failed or was skipped: skipped too, and the runs that do not depend on
  the failure go on;
- otherwise it starts, its output appended to W/runs/<name>/log.txt. A run killed earlier is
  simply started again: `mmjax.main` resumes from its newest checkpoint on the same workdir;
- exit 75 (mmjax.train.preemption: stopped on a signal after saving) stops the sweep at once:
  it was a signal, meant for the sweep as a whole. The sweep exits 75; running it again resumes.
One line is printed per change of state and a bar advances over the runs; at the end, a table
of every run's state. Exit status: 75 stopped, 1 a run failed, 0 otherwise.

How a run is started is injectable (`launch(command, log_path) -> exit status`): tests run
the sweep logic with a fake job and no JAX; `Subprocess` is the real one.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from tqdm import tqdm

from mmjax.sweep import state
from mmjax.sweep.plan import Planned

Launch = Callable[[Sequence[str], str], int]

ALREADY_DONE, SKIPPED, NOT_STARTED = "already done", "skipped", "not started"


@dataclasses.dataclass
class Outcome:
    """What became of one run in this invocation."""

    name: str
    state: str  # state.DONE | state.FAILED | state.STOPPED | ALREADY_DONE | SKIPPED | NOT_STARTED
    rc: int | None = None
    seconds: float | None = None
    because: str = ""  # SKIPPED: the run it waited for that failed or was skipped; FAILED: the log

    def describe(self) -> str:
        took = f" in {self.seconds:.0f} s" if self.seconds is not None else ""
        if self.state == state.DONE:
            return f"done{took}"
        if self.state == state.FAILED:
            return f"failed (rc {self.rc}){took}: see {self.because}"
        if self.state == state.STOPPED:
            return f"stopped (rc {self.rc}){took}: run the sweep again to resume it"
        if self.state == SKIPPED:
            return f"skipped (because {self.because})"
        return self.state


def run(planned: Sequence[Planned], launch: Launch, stop_requested: Callable[[], bool] = lambda: False,
        write: Callable[[str], None] | None = None) -> tuple[list[Outcome], int]:
    """Run `planned` (in dependency order) one at a time; (every run's outcome, exit status)."""
    outcomes: dict[str, Outcome] = {}
    total = len(planned)
    bar = tqdm(total=total, unit="run", desc="sweep", dynamic_ncols=True, disable=None)  # off unless a terminal
    say = write or tqdm.write  # tqdm.write keeps the lines above the bar

    def finish(k: int, outcome: Outcome, line: str | None = None) -> None:
        outcomes[outcome.name] = outcome
        say(f"[{k}/{total}] {outcome.name}: {line or outcome.describe()}")
        bar.update()

    stopped = False
    for k, p in enumerate(planned, 1):
        if stopped or stop_requested():
            stopped = True
            outcomes[p.name] = Outcome(p.name, NOT_STARTED)
            continue
        record = state.read(p.workdir) or {}
        if record.get("state") == state.DONE:
            other = record.get("command") not in (None, list(p.command))
            finish(k, Outcome(p.name, ALREADY_DONE), ALREADY_DONE + (
                " (by another command line: delete its workdir to run it again)" if other else ""))
            continue
        blocked = next((d for d in p.needs if d in outcomes and outcomes[d].state in (state.FAILED, SKIPPED)), None)
        if blocked is not None:
            why = "failed" if outcomes[blocked].state == state.FAILED else "was skipped"
            finish(k, Outcome(p.name, SKIPPED, because=f"{blocked} {why}"))
            continue
        say(f"[{k}/{total}] {p.name}: started (log: {p.log})")
        state.write(p.workdir, state.RUNNING, p.command)
        start = time.monotonic()
        rc = launch(p.command, p.log)
        seconds = time.monotonic() - start
        result = state.of_rc(rc)
        if result != state.DONE and stop_requested():  # killed by a signal the sweep passed on
            result = state.STOPPED
        state.write(p.workdir, result, p.command, rc, seconds)
        finish(k, Outcome(p.name, result, rc, seconds, because=p.log if result == state.FAILED else ""))
        stopped = result == state.STOPPED
    bar.close()
    states = [o.state for o in outcomes.values()]
    code = state.PREEMPTED if stopped else 1 if state.FAILED in states else 0
    return [outcomes[p.name] for p in planned], code


def table(outcomes: Sequence[Outcome]) -> str:
    """Every run's state, one a line, and the counts."""
    width = max([len("run"), *(len(o.name) for o in outcomes)])
    lines = [f"{'run':<{width}}  state"]
    lines += [f"{o.name:<{width}}  {o.describe()}" for o in outcomes]
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


# ---- the real launcher ----------------------------------------------------------------------

class Subprocess:
    """Starts each command as a process of its own, output appended to its log, and passes the
    sweep's signals on to it.

    The job runs in a process group of its own, so a Ctrl-C in the terminal reaches it once,
    through the sweep, not twice (mmjax.train.preemption ends a job at once on a second
    signal, before it saves). SIGINT and SIGTERM are passed on as they are, SIGHUP (the
    terminal closed) as SIGTERM: the job saves and exits 75, and the sweep stops after it. A
    sweep killed with SIGKILL cannot pass anything on; its job runs to its end alone.

    Use as a context manager: the handlers are the sweep's only while it runs.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.stop_requested = False
        self._child: subprocess.Popen | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._child is not None and self._child.poll() is None:  # the sweep itself failed mid-run
            self._child.terminate()
            self._child.wait()

    def _on_signal(self, signum, frame):  # noqa: ARG002
        self.stop_requested = True
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def __call__(self, command: Sequence[str], log_path: str) -> int:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        # Unbuffered: the log shows the job's progress as it happens (`tail -f`), not at its end.
        env = {**os.environ, "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1")}
        with open(log_path, "a") as log:
            now = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"==== mmjax.sweep {now}: {shlex.join(command)}\n")
            log.flush()
            self._child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, env=env, process_group=0)
            if self.stop_requested:  # a signal came while it was being started: pass it on now
                self._child.terminate()
            try:
                while True:  # a timed wait, not a blocking one: a signal that lands on another
                    try:     # thread (tqdm's monitor) still gets its handler run here at once
                        return self._child.wait(timeout=1.0)
                    except subprocess.TimeoutExpired:
                        pass
            finally:
                self._child = None
