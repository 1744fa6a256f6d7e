"""Many `python -m mmjax.main` runs for the price of one interpreter start (`run_many`).

Why: most of a CLI error test's ~2 s is importing jax, grain and mmjax (a config file imports
mmjax.jobs.recipe) before the CLI reads a flag. One Python imports all that once, then forks a
child per invocation, one at a time, that runs mmjax.main as __main__ (runpy, as `python -m`) on
its argv, stdout and stderr into files: the same exit status and stderr as a fresh process.
Sound because the parent never parses absl flags nor starts a JAX backend (both checked before
each fork; a child may use devices), and never imports mmjax.main itself (its flags would be
defined twice). A child ends as the interpreter would (SystemExit's status and message, an error's
traceback, threads joined, atexit), then os._exit: the full teardown costs ~0.4 s a child.
A run that must overlap another live process still needs a real subprocess.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

import nothing_built

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the CLI imports on every run, up to reporting a command-line error: absl, ml_collections,
# jax and grain (through mmjax.jobs.build), mmjax.main's own imports, the config files' recipe
# helpers and what main / preflight import lazily. Never mmjax.main (see above).
PRELOAD = ("absl.app", "absl.flags", "absl.logging", "ml_collections", "ml_collections.config_flags", "jax",
           "grain", "mmjax.jobs.recipe", "mmjax.jobs.build", "mmjax.jobs.preflight", "mmjax.jobs.workdir_lock",
           "mmjax.config_schema", "mmjax.train.preemption")

_BATCH = r'''
import atexit, importlib, json, os, runpy, signal, sys, threading, time
spec_path = sys.argv[1]
with open(spec_path) as f:
    spec = json.load(f)
for name in spec["preload"]:
    importlib.import_module(name)
assert "mmjax.main" not in sys.modules, "mmjax.main was imported: running it as __main__ would define its flags twice"
from absl import flags
from jax._src import xla_bridge


def _exit_as_python_does(error):
    """End this child as the interpreter ends `python -m` after `error` (None: the module returned):
    SystemExit's status (its message printed when it is not an int), any other error's traceback
    and status 1; then non-daemon threads joined, atexit run, stdio flushed. os._exit, not
    sys.exit: the interpreter's teardown of everything the parent imported costs ~0.4 s a child."""
    code, killed_by = 0, None
    if isinstance(error, SystemExit):
        if error.code is None:
            code = 0
        elif isinstance(error.code, int):
            code = error.code
        else:
            print(error.code, file=sys.stderr)
            code = 1
    elif isinstance(error, KeyboardInterrupt):  # as Python ends on ^C: killed by SIGINT
        sys.excepthook(type(error), error, error.__traceback__)
        killed_by = signal.SIGINT
    elif error is not None:
        sys.excepthook(type(error), error, error.__traceback__)
        code = 1
    try:
        threading._shutdown()  # what the interpreter's finalisation does first
    except BaseException:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    if killed_by is not None:
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    os._exit(code & 0xFF)


def _child(invocation):
    """In the forked child: become the CLI process, and end as it would. Never returns."""
    error = None
    try:
        for fd, path in ((1, invocation["stdout"]), (2, invocation["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS; a fork shares it
            sys.modules["numpy"].random.seed()
        if invocation["nothing_built"]:  # tests/nothing_built.py's program, as `python -c PROGRAM ARGS` runs it
            sys.argv = ["-c", *invocation["args"]]
            namespace = {"__name__": "__main__", "__builtins__": __builtins__}
            exec(compile(spec["nothing_built"], "<string>", "exec"), namespace)
        else:  # python -m mmjax.main ARGS (alter_sys: argv[0] and sys.modules["__main__"] as -m sets them)
            sys.argv = ["-m", *invocation["args"]]
            runpy.run_module("mmjax.main", run_name="__main__", alter_sys=True)
    except BaseException as e:
        error = e
    _exit_as_python_does(error)


results = []
for invocation in spec["invocations"]:
    if flags.FLAGS.is_parsed() or xla_bridge.backends_are_initialized():
        raise RuntimeError("absl flags parsed or a JAX backend started before fork: children would share them")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(invocation)
    deadline, delay, timed_out = time.monotonic() + spec["timeout"], 0.001, False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(delay)
        delay = min(2 * delay, 0.02)
    result = {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}
    for stream in ("stdout", "stderr"):  # as subprocess.run(text=True) decodes
        with open(invocation[stream], encoding="utf-8", errors="replace") as f:
            result[stream] = f.read()
    results.append(result)
with open(spec["results"], "w") as f:
    json.dump(results, f)
'''


@dataclasses.dataclass(frozen=True)
class Result:
    """One invocation's outcome, as a subprocess.CompletedProcess(text=True) would have it."""
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run_many(invocations: list[tuple[list[str], bool]], cwd: str = ROOT, env: dict | None = None,
             timeout: float = 300) -> list[Result]:
    """Run `python -m mmjax.main ARGS` for each (ARGS, nothing_built) in `invocations`, one after
    another, from one interpreter start (module docstring); their Results in the same order.

    nothing_built=True runs ARGS as tests/nothing_built.py's `command(*ARGS)` does (builders
    refused: an error found before anything is built exits 2, one found later exits 1).
    `cwd` and `env` are every run's; `timeout` (seconds) is each run's, as subprocess.run's: a run
    past it is killed and subprocess.TimeoutExpired raised once all have run.
    """
    with tempfile.TemporaryDirectory(prefix="mmjax-cli-batch-") as tmp:
        planned = []
        for k, (args, refuse_builds) in enumerate(invocations):
            planned.append({"args": [str(a) for a in args], "nothing_built": bool(refuse_builds),
                            "stdout": os.path.join(tmp, f"{k}.out"), "stderr": os.path.join(tmp, f"{k}.err")})
        spec = {"preload": PRELOAD, "invocations": planned, "timeout": timeout, "nothing_built": nothing_built._PROGRAM,
                "results": os.path.join(tmp, "results.json")}
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        batch = subprocess.run([sys.executable, "-c", _BATCH, spec_path], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=120 + timeout * len(planned))
        if batch.returncode != 0 or not os.path.exists(spec["results"]):
            raise RuntimeError(f"the CLI batch failed (exit {batch.returncode}):\n{batch.stdout}\n{batch.stderr}")
        with open(spec["results"]) as f:
            outcomes = json.load(f)
    results = [Result(p["args"], o["returncode"], o["stdout"], o["stderr"]) for p, o in zip(planned, outcomes)]
    for p, o in zip(planned, outcomes):
        if o["timed_out"]:
            raise subprocess.TimeoutExpired(["python", "-m", "mmjax.main", *p["args"]], timeout)
    return results
