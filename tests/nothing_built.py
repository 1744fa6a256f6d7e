"""`python -m mmjax.main`, with the builders of the tokenizer, the model and the data replaced by
a failure: an error the CLI reports before anything is built exits 2 with its one line; one
reached later exits 1 naming this. Tests of early errors run the CLI through `command`."""

import sys

_PROGRAM = """
import runpy, sys
from mmjax.jobs import build
def refuse(*args, **kwargs):
    raise SystemExit("a tokenizer, model or dataset was built before the error")
build.tokenizer = build.model = build.source = build.selected_source = refuse
sys.argv = ["mmjax.main", *sys.argv[1:]]
runpy.run_module("mmjax.main", run_name="__main__")
"""


def command(*args: str) -> list[str]:
    """The argv that runs mmjax.main with `args`, refusing to build anything."""
    return [sys.executable, "-c", _PROGRAM, *args]
