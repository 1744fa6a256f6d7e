"""`python -m mmjax.sweep --config configs/<sweep>.py[:arg] --workdir W [--only GLOB] [--dry_run] [--emit slurm]
[--config.<key>=<value> ...]`.

Runs the runs of the file's `get_sweep(arg)` (mmjax.sweep.spec) as ordinary `python -m
mmjax.main` jobs in W/runs/<name>, one at a time, in dependency order (mmjax.sweep.runner).
Before anything starts, every run's recipe, overrides, dependencies and inputs are checked
(mmjax.sweep.check); a mistake is one line per run naming the run and the field, exit 2.

    --only GLOB   only the runs whose names match (fnmatch; several comma-separated); a run
                  they need that is left out must be done already
    --dry_run     print each run's command line (shell-quoted) and its dependencies; run nothing
    --emit slurm  write W/slurm/<name>.sbatch per run and W/slurm/submit.sh, which submits them
                  chained with --dependency=afterok (mmjax.sweep.slurm); run nothing
    --config.<key>=<value>   (or `--config.<key> <value>`; repeatable) a sweep-wide override, the
                  syntax of `python -m mmjax.main`: given to EVERY run, after the run's own
                  overrides, so it wins over them (a run's own value of that key is left out),
                  e.g. `--config.optim.learning_rate=1e-6`. Checked with the runs' own, shown by
                  --dry_run, written into the Slurm scripts, and part of each run's command line:
                  a run done by another command line is not run again but said so
    --config.report.published=<table>   not given to the runs: the sweep's own, for the report
                  written at its end (one of report.PUBLISHED: pism_vrt, pism_vpt, cmab_vrt,
                  cmab_vpt), as `report W --published <table>`; no other --config.report.* exists

A sweep with an `eval_base` run (configs/paradigms.py) ends by writing W/paradigms.{json,md,png}
(mmjax.sweep.report); `python -m mmjax.sweep report W [--published pism_vrt]` rebuilds them.

Exit status: 0 every run done, 1 a run failed (its dependents skipped, the rest ran), 2 a
mistake found before anything ran, 75 stopped by a signal (run the same command to resume).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from mmjax.sweep import check, plan, report, runner, slurm, state
from mmjax.sweep.spec import SweepError

_PROG = "mmjax.sweep"
PUBLISHED = "report.published"  # --config.report.published=<table>: the sweep's own, not the runs'
_OVERRIDE = re.compile(r"-{1,2}((?:no)?config\.[^=]*)(=.*)?", re.DOTALL)  # ml_collections' override flags


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(argv without its `--config.<key>` overrides, the overrides as `--config.<key>=<value>`).

    absl cannot define flags named with dots, so the sweep takes them out before absl parses the
    rest; ml_collections' forms are accepted: `--config.k=v`, `--config.k v`, `-config.k=v`, a bare
    `--config.k` (a bool's true) and `--noconfig.k` (its false). `--config FILE` and
    `--config=FILE` (the sweep file) stay, as does everything after `--`.
    """
    rest, overrides = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        match = _OVERRIDE.fullmatch(arg) if i > 0 else None  # argv[0] is the program
        if match is None:
            rest.append(arg)
            if arg in ("--config", "-config") and i + 1 < len(args):  # its value is the file, whatever it reads
                rest.append(args[i + 1])
                i += 1
        else:
            name, value = match.group(1), match.group(2)
            if value is None and not name.startswith("no") and i + 1 < len(args) and _is_value(args[i + 1]):
                value = "=" + args[i + 1]
                i += 1
            overrides.append(f"--{name}{value or ''}")
        i += 1
    return rest, overrides


def _is_value(arg: str) -> bool:
    """The argument after a bare `--config.k` is its value, unless it is a flag (a negative number is a value)."""
    if not arg.startswith("-"):
        return True
    try:
        float(arg)
    except ValueError:
        return False
    return True


def sweep_options(overrides: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """(the sweep-wide overrides given to every run, the report's published table or None).

    `--config.report.published=<table>` is the sweep's own option: taken out, and the table checked
    against report.PUBLISHED. Any other `--config.report.*` is a mistake (SweepError).
    """
    tables = ", ".join(sorted(report.PUBLISHED))
    runs, published = [], None
    for override in overrides:
        key = plan.override_key(override) or ""
        if key != "report" and not key.startswith("report."):
            runs.append(override)
            continue
        name, eq, value = override.partition("=")
        if key != PUBLISHED or not name.startswith("--config."):
            raise SweepError(f"{name}: the sweep has no such option; --config.report.* is the sweep's own "
                             f"(not given to the runs), and only --config.{PUBLISHED}=<table> exists "
                             f"(tables: {tables})")
        if not eq or value not in report.PUBLISHED:
            raise SweepError(f"{override}: no published table {value!r} (tables: {tables})")
        published = value
    return tuple(runs), published


def sweep(config: str, workdir: str, *, only: str | None = None, dry_run: bool = False, emit: str | None = None,
          overrides: Sequence[str] = (), launch: Callable | None = None, out: Callable[[str], None] = print) -> int:
    """The whole command; its exit status. `overrides`: the sweep-wide `--config.<key>=<value>`
    flags (split_argv), given to every run after its own, so they win over them, except
    `--config.report.published=<table>`, the end report's (sweep_options). `launch(command,
    log_path) -> rc` starts a run (default: runner.Subprocess); `out` prints."""
    try:
        overrides, published = sweep_options(overrides)
        runs, has_get_config = plan.load(config)
        planned = plan.plan(runs, config, workdir, has_get_config, overrides=overrides)
        reports = any(p.name == "eval_base" for p in planned)  # the paradigm grid: its table at the end
        if published is not None and not reports:
            raise SweepError(f"--config.{PUBLISHED}={published}: this sweep has no eval_base run, so it writes "
                             f"no paradigm report to put the paper's numbers in")
        by_name = {p.name: p for p in planned}

        def done(name: str) -> bool:
            return state.is_done(by_name[name].workdir)
        chosen = plan.select(planned, only, lambda p: done(p.name))
    except SweepError as e:
        return _error(str(e))
    errors = check.check(chosen, done)
    if errors:
        for line in errors:
            print(f"{_PROG}: error: {line}", file=sys.stderr)
        return 2
    if dry_run:
        for k, p in enumerate(chosen, 1):
            status = " (already done)" if done(p.name) else ""
            out(f"# [{k}/{len(chosen)}] {p.name}: after {', '.join(p.needs) or 'nothing'}{status}")
            out(shlex.join(p.command))
        return 0
    if emit == "slurm":
        paths = slurm.emit(chosen, workdir, config, done)
        out(f"wrote {len(paths) - 1} batch scripts and {paths[-1]}: run `bash {shlex.quote(paths[-1])}` "
            f"to submit them")
        if published is not None:  # no sweep process stays to write the report at the end
            out(f"when they are done, `python -m mmjax.sweep report {shlex.quote(workdir)} --published "
                f"{published}` writes the paradigm table")
        return 0
    if launch is None:
        with runner.Subprocess() as launcher:
            outcomes, code = runner.run(chosen, launcher, lambda: launcher.stop_requested)
    else:
        outcomes, code = runner.run(chosen, launch, lambda: bool(getattr(launch, "stop_requested", False)))
    out(runner.table(outcomes))
    if reports:
        _report(workdir, out, published=published)
    if code == state.PREEMPTED:
        out(f"{_PROG}: stopped on a signal; run the same command again to resume")
    return code


def _report(workdir: str, out: Callable[[str], None], published: str | None = None) -> None:
    """W/paradigms.{json,md,png} (mmjax.sweep.report; matplotlib is imported only there) from
    whatever has finished, with the paper's `published` table as reference rows; a failure is
    printed and does not change the sweep's exit status."""
    try:
        report.write(workdir, published=published)
        again = f" --published {published}" if published else ""
        out(f"{_PROG}: the paradigm table: {workdir}/paradigms.md "
            f"(`python -m mmjax.sweep report {workdir}{again}` rebuilds it)")
    except Exception as e:  # noqa: BLE001  (a report is not worth failing a finished sweep)
        print(f"{_PROG}: warning: the paradigm report failed: {e!r}", file=sys.stderr)


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


def run() -> None:
    """The command line. Its flags are defined here, not at import: mmjax.main defines --config and
    --workdir too, and absl refuses a second definition in one process (tests import both). The
    sweep-wide `--config.<key>=<value>` overrides are taken out of argv first (split_argv)."""
    argv, overrides = split_argv(sys.argv)
    config = flags.DEFINE_string(
        "config", None, "configs/<sweep>.py[:arg]: a file with get_sweep(arg). --config.<key>=<value> "
        "(repeatable; also --config.<key> <value>): a sweep-wide override given to every run after its own "
        f"overrides, so it wins; --config.report.published=<table> ({', '.join(sorted(report.PUBLISHED))}) is "
        "the end report's, not the runs'.")
    workdir = flags.DEFINE_string("workdir", None, "The sweep's folder: each run's workdir is W/runs/<name>.")
    only = flags.DEFINE_string("only", None, "Run only the runs whose names match this glob (comma-separated globs).")
    dry_run = flags.DEFINE_bool("dry_run", False, "Print each run's command line and dependencies; run nothing.")
    emit = flags.DEFINE_enum("emit", None, ["slurm"], "Write batch scripts for this scheduler instead of running.")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not config.value or not workdir.value:
            raise app.UsageError("--config and --workdir are required, e.g. --config configs/demo.py "
                                 "--workdir /tmp/sweep")
        sys.exit(sweep(config.value, workdir.value, only=only.value, dry_run=dry_run.value, emit=emit.value,
                       overrides=overrides))

    app.run(main, argv=argv)
