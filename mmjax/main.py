"""mmjax command line: `python -m mmjax.main --config configs/<recipe>.py [--workdir DIR]`.

Config as code (big_vision style): `--config configs/x.py:arg` picks a variant and
`--config.a.b=value` overrides a field. The job is chosen by `config.mode`.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/<recipe>.py file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and exports go.")


def _modes():
    from mmjax.jobs import demo
    return {"demo": demo.run}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/demo.py")
    modes = _modes()
    if config.mode not in modes:
        raise app.UsageError(f"config.mode={config.mode!r} is not one of {sorted(modes)}")
    workdir = _WORKDIR.value or os.path.join("/tmp", "mmjax", config.mode)
    os.makedirs(workdir, exist_ok=True)
    logging.info("mode=%s workdir=%s", config.mode, workdir)
    modes[config.mode](config, workdir)


if __name__ == "__main__":
    flags.mark_flags_as_required([])
    app.run(main)
