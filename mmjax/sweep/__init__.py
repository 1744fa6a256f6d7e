"""Sweeps: named runs of `mmjax.main` that a recipe declares, run in dependency order.

A recipe (configs/*.py) may define `get_sweep(arg)` beside `get_config(arg)`, as big_vision's
`get_hyper` sits beside its config. It returns `Run`s: a name, a recipe (default: the file's
own `get_config`), config overrides, and the runs it waits for. `{run}` inside an override is
that run's workdir and a dependency on it (`init_from="{sft_mid}"`). `product`, `zip_` (also
`zip`), `chain` and `each` build the usual grids:

    def get_sweep(arg=None):
        return sweep.product(**{"optim.learning_rate": (1e-3, 3e-3), "grpo.num_generations": (4, 8)})

`python -m mmjax.sweep --config configs/<sweep>.py --workdir W` runs them (mmjax.sweep.cli).
This module holds only the plain-data helpers, so a recipe imports it for nothing.
"""

from mmjax.sweep.spec import Run, SweepError, chain, each, product, zip_

zip = zip_  # noqa: A001  the issue's name for it; `zip_` where the builtin is wanted too

__all__ = ["Run", "SweepError", "chain", "each", "product", "zip", "zip_"]
