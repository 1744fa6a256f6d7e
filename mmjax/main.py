"""mmjax command line: `python -m mmjax.main --config configs/<recipe>.py [--workdir DIR]`.

Config as code (big_vision style): `--config configs/x.py:arg` picks a variant and
`--config.a.b=value` overrides a field. The job is chosen by `config.mode`.

A mistake on the command line (a missing config file, an unknown field, a value outside a
field's allowed set, an input path that does not exist: mmjax.jobs.preflight) is one line on
stderr and exit status 2, not a traceback. So is a workdir another run is using: a run holds
`<workdir>/.mmjax.lock` while its job runs (mmjax.jobs.workdir_lock).

Exit status: 0 done, 2 a command-line mistake, 75 stopped by SIGTERM / SIGINT after saving
(mmjax.train.preemption: rerun the same command to resume), 1 anything else.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Collection

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmjax.jobs import preflight, workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/<recipe>.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and exports go.")
_PROG = "mmjax.main"


# config.mode -> the module under mmjax.jobs whose `run(config, workdir)` is the job.
MODES = {"demo": "demo", "grpo": "grpo", "score": "score", "sft": "sft", "eval": "eval"}


def _modes():
    import importlib
    return {mode: (lambda config, workdir, _m=module: importlib.import_module(f"mmjax.jobs.{_m}").run(config, workdir))
            for mode, module in MODES.items()}


# ---- allowed values of config fields -------------------------------------------------------

# dotted field -> its allowed values, or a function giving them (evaluated only when the field
# is in the config). Checked after the config is loaded and overridden.
CHOICES: dict[str, Collection[str] | Callable[[], Collection[str]]] = {
    "mode": lambda: sorted(_modes()),
    "model.dtype": ("float32", "bfloat16"),
    "model.compute_dtype": ("", "float32", "bfloat16"),
    "model.attention": lambda: __import__("mmjax.models.attention", fromlist=["x"]).IMPLEMENTATIONS,
    "model.remat": lambda: __import__("mmjax.models.remat", fromlist=["x"]).REMAT_POLICIES,
    "model.vision_remat": lambda: __import__("mmjax.models.remat", fromlist=["x"]).REMAT_POLICIES,
}


def register_choices(field: str, values: Collection[str] | Callable[[], Collection[str]]) -> None:
    """Declare the allowed values of config field `field` (dotted, e.g. "train.optimizer")."""
    CHOICES[field] = values


def validate(config) -> None:
    """Raise ValueError naming the first field whose value is not one of its CHOICES."""
    for field, values in CHOICES.items():
        node, present = config, True
        for key in field.split("."):
            if not hasattr(node, "keys") or key not in node:
                present = False
                break
            node = node[key]
        if not present:
            continue  # this recipe has no such field
        allowed = values() if callable(values) else values
        if node not in allowed:
            raise ValueError(f"config.{field}={node!r} is not one of {sorted(allowed)}")


# ---- command-line errors as one line -------------------------------------------------------

def _fail(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_arg(argv: list[str]) -> str | None:
    """The value given to --config (absl accepts -config / --config, `=value` or `value`)."""
    for i, arg in enumerate(argv[1:], 1):
        if arg in ("--config", "-config"):
            return argv[i + 1] if i + 1 < len(argv) else None
        if m := re.fullmatch(r"--?config=(.*)", arg):
            return m.group(1)
    return None


def _check_config_file(value: str | None) -> None:
    if value is None:
        return
    file = value.split(":", 1)[0]
    if not os.path.isfile(file):
        where = "" if os.path.isabs(file) else f" (relative to {os.getcwd()})"
        what = "is a directory, not a config file" if os.path.isdir(file) else "no such config file"
        _fail(f"--config {file}: {what}{where}")


def _overrides(argv: list[str]) -> list[str]:
    """Dotted fields of the --config.<field>=value flags, in order."""
    fields = []
    for arg in argv[1:]:
        if m := re.match(r"--?(?:no)?config\.([^=]+)", arg):
            fields.append(m.group(1))
    return fields


def _unknown_field(argv: list[str], value: str) -> str | None:
    """For a failed override: which --config.<field> names no field of the config, and what it has."""
    parser = config_flags.config_flags.ConfigFileFlagParser("config", lock_config=False)
    try:
        config = parser.parse(value)
    except Exception:  # noqa: BLE001  the file itself fails: let the original error show
        return None
    file = value.split(":", 1)[0]
    for field in _overrides(argv):
        node, keys = config, field.split(".")
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys"):
                break  # below a leaf (e.g. a tuple index): not ours to judge
            if key not in node:
                parent = ".".join(["config", *keys[:depth]])
                return (f"--config.{field}: {file} has no field config.{'.'.join(keys[:depth + 1])} "
                        f"({parent} has {sorted(node.keys())})")
            node = node[key]
    return None


def _config_error_line(message: str) -> str:
    """A recipe's deliberate ValueError (e.g. an unknown config arg) as one line; other errors
    from a config file's own code keep their traceback, which is what its author needs."""
    lines = [line for line in message.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in message and lines[-1].startswith("ValueError: "):
        return lines[-1][len("ValueError: "):]
    return message


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config-file and override mistakes reported in one line."""
    value = _config_arg(argv)
    _check_config_file(value)
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        _fail(_config_error_line(str(e)))
    except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown field
        message = _unknown_field(argv, value) if value is not None else None
        if message is None:
            raise
        _fail(message)
    except OSError as e:  # the config file could not be read
        _fail(f"--config {value}: {' '.join(str(e).split())}")
    config = _CONFIG.value
    try:
        if config is not None:
            config.get("mode")  # a config file that failed to load raises on first access
    except OSError as e:
        _fail(f"--config {value}: {' '.join(str(e).split())}")
    return rest


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/demo.py")
    try:
        validate(config)
    except ValueError as e:
        _fail(str(e))
    if not flags.FLAGS["verbosity"].present:  # Orbax logs every save at INFO; --verbosity=0 brings it back
        absl_logging.set_verbosity(absl_logging.WARNING)
    workdir = _WORKDIR.value or os.path.join("/tmp", "mmjax", config.mode)
    try:  # every input path, before anything is built: a missing file is not news 30 s in
        preflight.check_inputs(config, workdir)
    except preflight.PreflightError as e:
        _fail(str(e))
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:  # e.g. no permission: what preflight cannot see without trying
        _fail(f"--workdir {workdir}: cannot create it: {e.strerror or e}")
    process_index = _maybe_initialize_distributed()  # before the lock: only process 0 takes it
    try:
        lock = workdir_lock.hold(workdir, config, process_index)
    except workdir_lock.WorkdirLocked as e:
        _fail(str(e))
    logging.info("mode=%s workdir=%s", config.mode, workdir)
    from mmjax.jobs.setup import ConfigFieldError
    from mmjax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
    with lock:
        try:
            _modes()[config.mode](config, workdir)
        except ConfigFieldError as e:
            _fail(str(e))
        except Preempted as e:  # a signal: the work so far is saved; a scheduler may requeue on 75
            print(f"{_PROG}: {e} (exit status {PREEMPTED_EXIT_CODE})", file=sys.stderr)
            sys.exit(PREEMPTED_EXIT_CODE)


# Set by launchers (or by hand) when one job spans several processes, as on a TPU pod slice
# or a multi-node GPU cluster; jax.distributed.initialize also reads cluster environments
# (SLURM, TPU metadata) by itself when called with no arguments.
_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def _maybe_initialize_distributed() -> int:
    """jax.distributed.initialize() when the environment describes several processes; this
    process's index (0 when it is the only one)."""
    import jax
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ.get("JAX_NUM_PROCESSES", "1")),
            process_id=int(os.environ.get("JAX_PROCESS_ID", "0")))
    elif os.environ.get("SLURM_NTASKS", "1") != "1" or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()
    else:
        return 0  # one process: no need to start the backend (jax.process_index) to know it
    return jax.process_index()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
