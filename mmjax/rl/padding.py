"""How much of a step's decode and update goes to padding, from its completion lengths (issue 24).

The sampler's decode loop stops when every row of a call has stopped, so a call runs as many
decode steps as its longest row, for every row: the slots after a row's end are padding. The
update then runs every row at the call's full width (max_new_tokens). One long row in a call
keeps all the others decoding: `limit_by_one_row` counts the calls that ran to the limit for a
single row. Host-side numbers on lengths only (no device work).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def padding_metrics(calls: Sequence[tuple[np.ndarray, int]], update_slots: int | None = None) -> dict[str, float]:
    """Metrics of one step's sampler calls, each given as (every row's completion length, stop
    token included, over all processes; the call's max_new_tokens). update_slots: the token slots
    the update's completion passes ran (packed rows hold fewer, grpo.update_layout); default the
    padded layout's, rows x max_new_tokens:

    completions/padding_fraction         decode slots spent on rows already finished:
                                         1 - sum(lengths) / sum(rows x longest row), over the calls
    completions/update_padding_fraction  token slots of the update that are padding:
                                         1 - sum(lengths) / update_slots
    completions/limit_by_one_row         the share of calls whose decode ran to max_new_tokens
                                         because of one row alone (the only row that long)
    """
    if not calls:
        raise ValueError("padding_metrics needs at least one sampler call")
    real = decoded = update = by_one = 0
    for lengths, width in calls:
        lengths = np.asarray(lengths, np.int64)
        if lengths.size == 0 or lengths.min() < 1 or lengths.max() > width:
            raise ValueError(f"completion lengths must be in [1, {width}] (max_new_tokens); got "
                             f"{lengths.min() if lengths.size else 'none'} .. {lengths.max() if lengths.size else ''}")
        real += int(lengths.sum())
        decoded += lengths.size * int(lengths.max())
        update += lengths.size * width
        by_one += int(lengths.max() == width and np.sum(lengths == width) == 1)
    return {"completions/padding_fraction": 1.0 - real / decoded,
            "completions/update_padding_fraction": 1.0 - real / (update_slots or update),
            "completions/limit_by_one_row": by_one / len(calls)}


def per_call(lengths: np.ndarray, rows: int, widths: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """(lengths, max_new_tokens) of each sampler call of a step, from lengths gathered process-major
    ([process 0: call 0, call 1, ...][process 1: ...]); every process holds `rows` rows of each call."""
    per_process = np.asarray(lengths).reshape(-1, len(widths), rows)
    return [(per_process[:, m].ravel(), int(width)) for m, width in enumerate(widths)]
