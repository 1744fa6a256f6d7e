"""From a sweep file to the `mmjax.main` command lines the runner starts, in dependency order.

`load` imports configs/<sweep>.py and calls its `get_sweep(arg)`, as ml_collections calls
`get_config(arg)`. `plan` gives each run its workdir (W/runs/<name>), what it depends on (its
`after` plus the runs its `{placeholders}` name) and its command line: the ordinary CLI, so a
run of a sweep is exactly the job `python -m mmjax.main` would run by hand, with nothing the
sweep adds but the sweep command line's own `--config.<key>=<value>` overrides, which go to
every run after the run's own (so they win). `select` applies `--only`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import numbers
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmjax.sweep import graph, placeholders
from mmjax.sweep.spec import Run, SweepError

LOG = "log.txt"  # each run's stdout and stderr, in its workdir


@dataclasses.dataclass(frozen=True)
class Planned:
    """A run of the sweep as the runner starts it."""

    name: str
    workdir: str  # W/runs/<name>, absolute: placeholders and Slurm scripts must not depend on the cwd
    config: str  # the --config value
    flags: tuple[str, ...]  # --config.<field>=<value>: the run's (placeholders resolved), then the sweep-wide ones
    needs: tuple[str, ...]  # the runs it waits for: `after`, then those its placeholders name
    command: tuple[str, ...]

    @property
    def log(self) -> str:
        return os.path.join(self.workdir, LOG)


def run_dir(workdir: str, name: str) -> str:
    return os.path.join(os.path.abspath(workdir), "runs", name)


# ---- the sweep file ---------------------------------------------------------------------------

def load(value: str) -> tuple[list[Run], bool]:
    """(the runs of `configs/x.py[:arg]`'s get_sweep, whether the file has a get_config)."""
    file, colon, arg = value.partition(":")
    if not os.path.isfile(file):
        where = "" if os.path.isabs(file) else f" (relative to {os.getcwd()})"
        raise SweepError(f"--config {file}: no such config file{where}")
    module = _import(file)
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise SweepError(f"--config {file}: defines no get_sweep(arg), so it is no sweep "
                         f"(a recipe runs with python -m mmjax.main --config {file})")
    try:
        runs = get_sweep(arg) if colon else get_sweep()
    except ValueError as e:  # recipe.parse_args' message names the file, the argument and the allowed ones
        raise SweepError(" ".join(str(e).split())) from None
    runs = [runs] if isinstance(runs, Run) else list(runs or ())
    bad = [r for r in runs if not isinstance(r, Run)]
    if bad or not runs:
        raise SweepError(f"--config {value}: get_sweep must return mmjax.sweep.Run objects, got "
                         f"{bad[0]!r}" if bad else f"--config {value}: get_sweep returned no runs")
    return runs, callable(getattr(module, "get_config", None))


def _import(file: str):
    name = "mmjax_sweep_" + re.sub(r"\W", "_", os.path.abspath(file))
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass defined in the file looks its module up here
    spec.loader.exec_module(module)
    return module


# ---- runs -> commands -------------------------------------------------------------------------

def plan(runs: Sequence[Run], value: str, workdir: str, has_get_config: bool = True,
         python: str = sys.executable, overrides: Sequence[str] = ()) -> list[Planned]:
    """The runs in dependency order, each with its workdir, dependencies and command line.

    A run without a recipe of its own runs `value` (the sweep file with the sweep's argument).
    `overrides`: the sweep-wide `--config.<key>=<value>` flags (the sweep command line's), given
    to every run as they are, after its own, and they win: a run's own override of a key they set
    (or of a field inside it) is left out.
    """
    overrides = tuple(overrides)
    bad = [o for o in overrides if override_key(o) is None]
    if bad:
        raise SweepError(f"a sweep-wide override must read --config.<key>=<value>, got {bad[0]!r}")
    wide = [override_key(o) for o in overrides]
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SweepError(f"runs named twice: {', '.join(twice)}")
    by_name = {r.name: r for r in runs}
    needs: dict[str, tuple[str, ...]] = {}
    for run in runs:
        refs = []
        for key, v in run.overrides.items():
            for ref in placeholders_of(run, key, v):
                if ref not in by_name:
                    raise SweepError(f"run {run.name}: {{{ref}}} in {key}={v!r} names no run of this sweep "
                                     f"(runs: {', '.join(names)})")
                refs.append(ref)
        needs[run.name] = tuple(dict.fromkeys([*run.after, *refs]))
        if not run.config and not has_get_config:
            raise SweepError(f"run {run.name} names no recipe (Run(config=...)) and {value.split(':')[0]} "
                             f"has no get_config to run")

    def workdir_of(name: str) -> str:
        return run_dir(workdir, name)

    planned = []
    for name in graph.order(needs):
        run = by_name[name]
        config = run.config or value
        # A key the sweep-wide overrides set is theirs alone: ml_collections appends a tuple field's
        # repeated flags instead of keeping the last, and refuses a field after one inside it.
        own = tuple(flag(key, placeholders.resolve(v, workdir_of)) for key, v in run.overrides.items()
                    if not any(key == w or key.startswith(w + ".") for w in wide))
        flags = (*own, *overrides)
        command = (python, "-m", "mmjax.main", "--config", config, "--workdir", workdir_of(name), *flags)
        planned.append(Planned(name, workdir_of(name), config, flags, needs[name], command))
    return planned


def placeholders_of(run: Run, key: str, value: Any) -> list[str]:
    try:
        return placeholders.names_in(value)
    except SweepError as e:
        raise SweepError(f"run {run.name}: {key}: {e}") from None


_OVERRIDE = re.compile(r"--(?:no)?config\.([^=]+)")


def override_key(flag_: str) -> str | None:
    """The field of `--config.<key>[=<value>]` (or `--noconfig.<key>`, a bool's false); None for another flag."""
    match = _OVERRIDE.match(flag_)
    return match.group(1) if match else None


def flag(key: str, value: Any) -> str:
    """`--config.<key>=<value>`, the value as absl's parsers (and ast.literal_eval) read it back."""
    return f"--config.{key}={text(value)}"


def text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):  # numpy's too: repr(np.float64(x)) is not a number in numpy 2
        return repr(float(value))
    if isinstance(value, Mapping):
        return repr({k: _plain(v) for k, v in value.items()})
    return repr(_plain(value))  # tuples, lists, None


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


# ---- --only -----------------------------------------------------------------------------------

def select(planned: Sequence[Planned], only: str | None, done: Callable[[Planned], bool]) -> list[Planned]:
    """The runs `--only` names (comma-separated fnmatch globs; None = all), in order.

    A selected run's dependency that is left out must be done already: otherwise the run would
    start without it.
    """
    if not only:
        return list(planned)
    globs = [g.strip() for g in only.split(",") if g.strip()]
    chosen = [p for p in planned if any(fnmatch.fnmatchcase(p.name, g) for g in globs)]
    if not chosen:
        raise SweepError(f"--only {only} matches no run (runs: {', '.join(p.name for p in planned)})")
    names = {p.name for p in chosen}
    by_name = {p.name: p for p in planned}
    for p in chosen:
        for dep in p.needs:
            if dep not in names and not done(by_name[dep]):
                raise SweepError(f"run {p.name} depends on {dep}, which --only {only} leaves out and which "
                                 f"is not done: select it too, or run it first")
    return chosen
