"""Sweeps from the command line.

    python -m mmjax.sweep --config configs/<sweep>.py[:arg] --workdir W [--only GLOB] [--dry_run] [--emit slurm]
        [--config.<key>=<value> ...] [--config.report.published=<table>]
    python -m mmjax.sweep report W [--published <table>]

The first runs a sweep (mmjax.sweep.cli): `--config.<key>=<value>` (repeatable, also `--config.<key> <value>`)
is a sweep-wide override given to every run after its own overrides, so it wins over them;
`--config.report.published=<table>` (pism_vrt, pism_vpt, cmab_vrt, cmab_vpt) is not given to the runs: it puts
the paper's numbers into the report written at the sweep's end. The second rebuilds that report
(mmjax.sweep.report).
"""

import sys

from mmjax.sweep import cli

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from mmjax.sweep import report
        sys.exit(report.main(sys.argv[2:]))
    cli.run()
