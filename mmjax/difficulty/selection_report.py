"""The selection report: what a job trained on, written to its workdir as selection.json."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmjax.difficulty.selection import Selection

REPORT = "selection.json"


def write_report(source, workdir: str) -> Selection | None:
    """A SelectedSource's selection (size, level mixes, rows) written to workdir/selection.json."""
    selection = getattr(source, "selection", None)
    if selection is None:
        return None
    import jax  # pylint: disable=g-import-not-at-top

    if jax.process_index() == 0:  # every process selects the same rows; one file is enough
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, REPORT)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(selection.summary(), f, indent=2)
        os.replace(tmp, path)
    return selection
