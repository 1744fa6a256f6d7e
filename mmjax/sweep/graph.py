"""The order a sweep's runs start in: each after every run it depends on.

A dependency on a run that does not exist, or a cycle, would leave runs waiting forever; both
are errors naming the runs (the cycle as `a -> b -> a`), found before anything starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

from mmjax.sweep.spec import SweepError


def order(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of `needs` (name -> the names it depends on), each after all it depends on.

    Among the runs that may start, the one listed first in `needs` goes first, so a sweep with
    no dependencies runs in the order its recipe wrote it.
    """
    names = list(needs)
    for name in names:
        for dep in needs[name]:
            if dep not in needs:
                close = difflib.get_close_matches(dep, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SweepError(f"run {name} depends on {dep!r}, which is no run of this sweep{hint}")
    placed: list[str] = []
    done: set[str] = set()
    waiting = list(names)
    while waiting:
        ready = next((n for n in waiting if all(d in done for d in needs[n])), None)
        if ready is None:
            raise SweepError(f"dependency cycle: {' -> '.join(_cycle(needs, waiting))}")
        waiting.remove(ready)
        placed.append(ready)
        done.add(ready)
    return placed


def _cycle(needs: Mapping[str, Sequence[str]], waiting: list[str]) -> list[str]:
    """One cycle among `waiting` (runs none of which can start), first name repeated at the end."""
    path, name = [], waiting[0]
    while name not in path:
        path.append(name)
        name = next(d for d in needs[name] if d in waiting)  # each waiting run waits on another one
    return path[path.index(name):] + [name]

