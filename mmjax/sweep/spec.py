"""What a sweep is: named runs of `mmjax.main`, and the helpers that build the usual grids of them.

A run is a recipe (`configs/x.py[:arg]`), its config overrides (dotted field -> value, what
`--config.<field>=<value>` would set) and the runs it waits for. The helpers build runs from
axes, big_vision's `get_hyper` style, so a learning-rate x group-size sweep over any recipe is

    product(**{"optim.learning_rate": (1e-3, 3e-3), "grpo.num_generations": (4, 8)})

An axis is a field and its values; a keyword's `__` stands for `.` (`optim__learning_rate`),
so a field can be named without `**{...}`. Run names come from the values
(`learning_rate=0.001_num_generations=4`) or, given `{label: value}` instead of a sequence,
from the labels (`{"lr1e-3": 1e-3}`). `product` is every combination, `zip_` the values side
by side, `chain` one sweep after another (their union); each takes sweeps (sequences of runs)
as well as axes, so they nest. `each` gives every run of a sweep a name prefix, a recipe,
dependencies or fixed overrides.

Everything here is plain data, checked as it is made: nothing is loaded or run.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# A run's name is a folder (W/runs/<name>), a Slurm job name and a `{name}` placeholder: no
# separators, spaces, braces or the `:` / `!` that str.format reads inside a placeholder.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]*")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


class SweepError(ValueError):
    """A mistake in a sweep (a name, a dependency, an override); the message is one line."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One `python -m mmjax.main` job of a sweep, in W/runs/<name>.

    `config`: the recipe, `configs/x.py[:arg]` as given to `--config`; "" = the sweep file itself
    with the sweep's own argument (its `get_config`). `overrides`: dotted field -> value (a
    leading `config.` is dropped). `after`: names of runs that must finish first; a `{name}` in an
    override's string implies one as well (mmjax.sweep.placeholders).
    """

    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    after: tuple[str, ...] = ()
    config: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise SweepError(f"run name {self.name!r}: use letters, digits and _ . = + - "
                             f"(it names a folder, a Slurm job and a {{placeholder}})")
        after = (self.after,) if isinstance(self.after, str) else tuple(self.after)
        for dep in after:
            if not isinstance(dep, str):
                raise SweepError(f"run {self.name}: after={self.after!r} must name runs (strings)")
        overrides = {}
        for key, value in dict(self.overrides).items():
            if not isinstance(key, str) or not key.strip("."):
                raise SweepError(f"run {self.name}: override key {key!r} is not a dotted field name")
            overrides[key.removeprefix("config.")] = value
        object.__setattr__(self, "after", tuple(dict.fromkeys(after)))
        object.__setattr__(self, "overrides", types.MappingProxyType(overrides))  # frozen all the way
        if not isinstance(self.config, str):
            raise SweepError(f"run {self.name}: config={self.config!r} must be 'configs/<recipe>.py[:arg]'")


# ---- the helpers ------------------------------------------------------------------------------

def _axis(key: str, values) -> list[Run]:
    """One axis as one-override runs: `optim__learning_rate=(1e-3, 3e-3)` -> learning_rate=0.001, ..."""
    field = key.replace("__", ".")
    if isinstance(values, Mapping):  # {label: value}: the labels name the runs
        items = list(values.items())
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SweepError(f"axis {field}: expected a sequence of values or {{label: value}}, got {values!r}")
    else:
        leaf = field.rsplit(".", 1)[-1]
        items = [(f"{leaf}={_NAME_UNSAFE.sub('-', str(v)).strip('-') or 'empty'}", v) for v in values]
    if not items:
        raise SweepError(f"axis {field} has no values")
    return [Run(str(label), {field: value}) for label, value in items]


def _sweeps(sweeps: Sequence[Sequence[Run]], axes: Mapping[str, Any]) -> list[list[Run]]:
    out = []
    for sweep in sweeps:
        sweep = [sweep] if isinstance(sweep, Run) else list(sweep)
        if not sweep or not all(isinstance(r, Run) for r in sweep):
            raise SweepError(f"expected a non-empty sequence of Run, got {sweep!r}")
        out.append(sweep)
    out += [_axis(key, values) for key, values in axes.items()]
    if not out:
        raise SweepError("no sweeps or axes given")
    return out


def _merge(runs: Sequence[Run], name: str | None = None) -> Run:
    """Runs taken together: names joined by `_` (or `name`), overrides merged (one field set
    twice is a mistake), dependencies united, at most one recipe."""
    overrides: dict[str, Any] = {}
    name = name or "_".join(r.name for r in runs)
    for run in runs:
        for key, value in run.overrides.items():
            if key in overrides and overrides[key] != value:
                raise SweepError(f"run {name}: {key} is set twice ({overrides[key]!r} and {value!r})")
            overrides[key] = value
    configs = sorted({r.config for r in runs if r.config})
    if len(configs) > 1:
        raise SweepError(f"run {name}: runs of different recipes combined ({', '.join(configs)})")
    return Run(name, overrides, tuple(d for r in runs for d in r.after), configs[0] if configs else "")


def product(*sweeps: Sequence[Run], **axes) -> tuple[Run, ...]:
    """Every combination of the sweeps' runs and the axes' values, the last one varying fastest."""
    return _unique(_merge(combo) for combo in itertools.product(*_sweeps(sweeps, axes)))


def zip_(*sweeps: Sequence[Run], **axes) -> tuple[Run, ...]:
    """The sweeps' runs and the axes' values side by side: the i-th run takes the i-th of each."""
    parts = _sweeps(sweeps, axes)
    lengths = [len(p) for p in parts]
    if len(set(lengths)) > 1:
        raise SweepError(f"zip_ of sweeps of different lengths {lengths}")
    return _unique(_merge(combo) for combo in zip(*parts))


def chain(*sweeps: Sequence[Run], **axes) -> tuple[Run, ...]:
    """The sweeps' runs one sweep after another (and each axis as a sweep of its own): their union."""
    return _unique(run for part in _sweeps(sweeps, axes) for run in part)


def each(sweep: Sequence[Run], *, prefix: str = "", config: str | None = None, after: Iterable[str] | str = (),
         overrides: Mapping[str, Any] | None = None) -> tuple[Run, ...]:
    """Every run of `sweep` named `<prefix>_<name>`, with `config` as its recipe (None keeps each
    run's), also waiting for `after`, and with `overrides` set (a field the run sets too is a mistake)."""
    out = []
    for run in _sweeps([sweep], {})[0]:
        name = f"{prefix}_{run.name}" if prefix else run.name
        merged = _merge([run, Run(run.name, overrides or {}, after)], name)
        out.append(merged if config is None else dataclasses.replace(merged, config=config))
    return _unique(out)


def _unique(runs: Iterable[Run]) -> tuple[Run, ...]:
    runs = tuple(runs)
    seen: set[str] = set()
    twice = sorted({r.name for r in runs if r.name in seen or seen.add(r.name)})
    if twice:
        raise SweepError(f"runs named twice: {', '.join(twice)} (give their values distinct labels)")
    return runs
