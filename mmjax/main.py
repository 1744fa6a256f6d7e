"""mmjax command line: `python -m mmjax.main --config configs/<recipe>.py [--workdir DIR]`.

Config as code (big_vision style): `--config configs/x.py:arg` picks a variant (typed
arguments, `configs/jigsaw_image.py:tiny,steps=20`) and `--config.a.b=value` overrides a field.
The job is chosen by `config.mode`. `--help_config` prints every field of the config (its value,
default, allowed values, one-line help and the dataclass it comes from) and exits.

A mistake on the command line is one line on stderr and exit status 2, not a traceback: a
missing config file, a recipe argument of the wrong name or type, an unknown field (named with
the closest real ones), a value outside a field's allowed set (the dataclasses' `choices`, checked
against mmjax.jobs.recipe's schema before anything loads), an input path that does not exist
(mmjax.jobs.preflight). So is a workdir another run is using: a run holds
`<workdir>/.mmjax.lock` while its job runs (mmjax.jobs.workdir_lock).

Exit status: 0 done, 2 a command-line mistake, 75 stopped by SIGTERM / SIGINT after saving
(mmjax.train.preemption: rerun the same command to resume), 1 anything else.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from mmjax.jobs import preflight, workdir_lock

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/<recipe>.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and exports go.")
_HELP_CONFIG = flags.DEFINE_bool("help_config", False, "Print every field of --config (value, default, allowed "
                                 "values, help, source) and exit without running anything.")
_PROG = "mmjax.main"


def _run_job(config, workdir: str):
    """config.mode's job: mmjax.jobs.<mode>.run (the modes are mmjax.jobs.recipe.MODES)."""
    return importlib.import_module(f"mmjax.jobs.{config.mode}").run(config, workdir)


# ---- the config's schema -------------------------------------------------------------------

def validate(config) -> None:
    """Raise ValueError naming every field whose value is outside its allowed set (one line).

    The allowed sets are the `choices` of the fields' dataclasses (mmjax.jobs.recipe.schema,
    mmjax.config_help.choice_error): checked here, before anything is built.
    """
    from mmjax.jobs import recipe
    errors = recipe.check(config)
    if errors:
        raise ValueError("; ".join(errors))


def describe(config, value: str) -> str:
    """--help_config: every field of the config, one a line (mmjax.config_schema.describe)."""
    from mmjax import config_schema
    from mmjax.jobs import recipe
    return "\n".join(config_schema.describe(config, recipe.schema_of(config), title=f"--config {value}"))


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
    """For a failed override: which --config.<field> names no field of the config, the closest
    real fields (difflib), and what its parent has."""
    parser = config_flags.config_flags.ConfigFileFlagParser("config", lock_config=False)
    try:
        config = parser.parse(value)
    except Exception:  # noqa: BLE001  the file itself fails: let the original error show
        return None
    from mmjax import config_schema
    return config_schema.unknown_field(config, _overrides(argv), value.split(":", 1)[0])


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
    except (AttributeError, KeyError):  # ml_collections: an override of an unknown field
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
    if _HELP_CONFIG.value:
        print(describe(config, _config_arg(sys.argv) or ""))
        return
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
    from mmjax.jobs.build import ConfigFieldError
    from mmjax.train.preemption import PREEMPTED_EXIT_CODE, Preempted
    with lock:
        try:
            _run_job(config, workdir)
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
