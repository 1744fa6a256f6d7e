"""`python -m mmjax.sweep --config configs/<sweep>.py[:arg] --workdir W [--only GLOB] [--dry_run] [--emit slurm]`.

Runs the runs of the file's `get_sweep(arg)` (mmjax.sweep.spec) as ordinary `python -m
mmjax.main` jobs in W/runs/<name>, one at a time, in dependency order (mmjax.sweep.runner).
Before anything starts, every run's recipe, overrides, dependencies and inputs are checked
(mmjax.sweep.check); a mistake is one line per run naming the run and the field, exit 2.

    --only GLOB   only the runs whose names match (fnmatch; several comma-separated); a run
                  they need that is left out must be done already
    --dry_run     print each run's command line (shell-quoted) and its dependencies; run nothing
    --emit slurm  write W/slurm/<name>.sbatch per run and W/slurm/submit.sh, which submits them
                  chained with --dependency=afterok (mmjax.sweep.slurm); run nothing

A sweep with an `eval_base` run (configs/paradigms.py) ends by writing W/paradigms.{json,md,png}
(mmjax.sweep.report); `python -m mmjax.sweep report W [--published pism_vrt]` rebuilds them.

Exit status: 0 every run done, 1 a run failed (its dependents skipped, the rest ran), 2 a
mistake found before anything ran, 75 stopped by a signal (run the same command to resume).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable

from absl import app, flags

from mmjax.sweep import check, plan, runner, slurm, state
from mmjax.sweep.spec import SweepError

_PROG = "mmjax.sweep"


def sweep(config: str, workdir: str, *, only: str | None = None, dry_run: bool = False, emit: str | None = None,
          launch: Callable | None = None, out: Callable[[str], None] = print) -> int:
    """The whole command; its exit status. `launch(command, log_path) -> rc` starts a run
    (default: runner.Subprocess); `out` prints."""
    try:
        runs, has_get_config = plan.load(config)
        planned = plan.plan(runs, config, workdir, has_get_config)
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
        return 0
    if launch is None:
        with runner.Subprocess() as launcher:
            outcomes, code = runner.run(chosen, launcher, lambda: launcher.stop_requested)
    else:
        outcomes, code = runner.run(chosen, launch, lambda: bool(getattr(launch, "stop_requested", False)))
    out(runner.table(outcomes))
    if any(p.name == "eval_base" for p in planned):  # the paradigm grid: rebuild its table
        _report(workdir, out)
    if code == state.PREEMPTED:
        out(f"{_PROG}: stopped on a signal; run the same command again to resume")
    return code


def _report(workdir: str, out: Callable[[str], None]) -> None:
    """W/paradigms.{json,md,png} (mmjax.sweep.report) from whatever has finished; a failure is
    printed and does not change the sweep's exit status."""
    from mmjax.sweep import report  # pylint: disable=g-import-not-at-top  (matplotlib: only when needed)
    try:
        report.write(workdir)
        out(f"{_PROG}: the paradigm table: {workdir}/paradigms.md "
            f"(`python -m mmjax.sweep report {workdir}` rebuilds it)")
    except Exception as e:  # noqa: BLE001  (a report is not worth failing a finished sweep)
        print(f"{_PROG}: warning: the paradigm report failed: {e!r}", file=sys.stderr)


def _error(message: str) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return 2


def run() -> None:
    """The command line. Its flags are defined here, not at import: mmjax.main defines --config and
    --workdir too, and absl refuses a second definition in one process (tests import both)."""
    config = flags.DEFINE_string("config", None, "configs/<sweep>.py[:arg]: a file with get_sweep(arg).")
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
        sys.exit(sweep(config.value, workdir.value, only=only.value, dry_run=dry_run.value, emit=emit.value))

    app.run(main)
