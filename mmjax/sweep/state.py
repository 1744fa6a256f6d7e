"""W/runs/<name>/sweep_state.json: what became of a run the last time a sweep started it.

    {"state": "running" | "done" | "failed" | "stopped", "rc": 0, "seconds": 41.2,
     "command": ["python", "-m", "mmjax.main", ...], "time": "2025-01-01T12:00:00"}

Only "done" makes the next invocation skip the run. Anything else (a run that failed, was
stopped on a signal, or was killed with the runner while "running") is started again, and
`mmjax.main` resumes it from its newest checkpoint on the same workdir. The file is replaced
whole (written beside it, then renamed), so a runner killed mid-write leaves the old state.

A Slurm script of `--emit slurm` records its run's end the same way:
`python -m mmjax.sweep.state WORKDIR RC COMMAND...`.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Sequence

FILE = "sweep_state.json"
RUNNING, DONE, FAILED, STOPPED = "running", "done", "failed", "stopped"
# mmjax.train.preemption.PREEMPTED_EXIT_CODE: a run stopped on a signal after saving. Not
# imported from there, which imports jax; tests/sweep/test_runner.py checks the two agree.
PREEMPTED = 75


def path(workdir: str) -> str:
    return os.path.join(workdir, FILE)


def read(workdir: str) -> dict | None:
    """The run's recorded state, or None (never started, or a file no runner wrote whole)."""
    try:
        with open(path(workdir)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def is_done(workdir: str) -> bool:
    return (read(workdir) or {}).get("state") == DONE


def of_rc(rc: int) -> str:
    return DONE if rc == 0 else STOPPED if rc == PREEMPTED else FAILED


def write(workdir: str, state: str, command: Sequence[str], rc: int | None = None,
          seconds: float | None = None) -> None:
    os.makedirs(workdir, exist_ok=True)
    record = {"state": state, "rc": rc, "seconds": None if seconds is None else round(seconds, 1),
              "command": list(command), "time": datetime.datetime.now().isoformat(timespec="seconds")}
    tmp = f"{path(workdir)}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    os.replace(tmp, path(workdir))


if __name__ == "__main__":  # a Slurm script's last line: WORKDIR RC COMMAND...
    _workdir, _rc, *_command = sys.argv[1:]
    write(_workdir, of_rc(int(_rc)), _command, int(_rc))
