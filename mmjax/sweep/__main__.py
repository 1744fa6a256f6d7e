"""`python -m mmjax.sweep`: see mmjax.sweep.cli; `python -m mmjax.sweep report W`: see mmjax.sweep.report."""

import sys

from mmjax.sweep import cli

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from mmjax.sweep import report
        sys.exit(report.main(sys.argv[2:]))
    cli.run()
