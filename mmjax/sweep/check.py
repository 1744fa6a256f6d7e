"""Every run's command line, checked before the first run starts: a typo found an hour into a
grid costs the hour.

Each run's `--config` and `--config.<field>=<value>` flags are parsed here exactly as
`mmjax.main` parses them (ml_collections' config flag, in a flag set of its own): the recipe
loads with its argument, every field exists (a mistyped one is named with the closest real
fields, mmjax.config_schema.close_keys, as mmjax.main names it), every value parses as its
field's type and lies in its field's allowed set (mmjax.jobs.recipe.check). Input paths are
checked as mmjax.main checks them when it starts (mmjax.jobs.preflight), except those that
name a run which has not finished: they cannot exist yet. Nothing is built or compiled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from absl import flags
from ml_collections import config_flags

from mmjax.sweep.plan import Planned, override_key
from mmjax.sweep.spec import SweepError


def check(planned: Sequence[Planned], done: Callable[[str], bool]) -> list[str]:
    """One line per mistake, each naming its run ([] = every run may start). `done(name)`: that
    run finished, so the paths its placeholders give exist."""
    from mmjax.jobs import preflight, recipe  # pylint: disable=g-import-not-at-top
    errors = []
    for p in planned:
        try:
            config = parse(p.config, p.flags)
        except SweepError as e:
            errors.append(f"run {p.name}: {e}")
            continue
        bad = recipe.check(config)
        if bad:
            errors += [f"run {p.name}: {line}" for line in bad]
            continue
        # A path under the workdir of a run that has not finished does not exist yet: checked
        # with that field emptied ('' = off for every path field), the rest as mmjax.main will.
        pending = [os.path.join(os.path.dirname(p.workdir), d) for d in p.needs if not done(d)]
        if pending:
            blanked = tuple(f.split("=", 1)[0] + "=" if any(w in f for w in pending) else f for f in p.flags)
            try:
                config = parse(p.config, blanked)
            except SweepError:
                continue  # a path inside a tuple or dict: left to mmjax.main when the run starts
        try:
            preflight.check_inputs(config, p.workdir)
        except preflight.PreflightError as e:
            errors.append(f"run {p.name}: {e}")
    return errors


def parse(value: str, overrides: Sequence[str]):
    """The config `python -m mmjax.main --config <value> <overrides>` runs; SweepError (one line)
    for a missing file, a recipe argument, an unknown field or a value of the wrong type."""
    file = value.split(":", 1)[0]
    if not os.path.isfile(file):
        raise SweepError(f"--config {file}: no such config file")
    argv = ["mmjax.main", "--config", value, *overrides]
    flag_values = flags.FlagValues()  # not absl's global FLAGS: one parse per run
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                             sys_argv=argv)
    try:
        flag_values(argv)
        config = holder.value
        config.get("mode")  # a config file that failed to load raises on first access
    except flags.Error as e:
        raise SweepError(_error_line(str(e))) from None
    except (AttributeError, KeyError) as e:  # ml_collections: an override of an unknown field
        raise SweepError(unknown_field(value, overrides) or f"--config {value}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())}") from None
    except OSError as e:
        raise SweepError(f"--config {value}: {' '.join(str(e).split())}") from None
    return config


def unknown_field(value: str, overrides: Sequence[str]) -> str | None:
    """The first override naming no field of the recipe, with the closest real fields (as
    mmjax.main reports it)."""
    from mmjax import config_schema  # pylint: disable=g-import-not-at-top
    try:
        config = config_flags.config_flags.ConfigFileFlagParser("config", lock_config=False).parse(value)
    except Exception:  # noqa: BLE001  the file itself fails: parse() reports that
        return None
    fields = [key for key in map(override_key, overrides) if key]
    return config_schema.unknown_field(config, fields, value.split(":", 1)[0])


def _error_line(message: str) -> str:
    """A recipe's deliberate ValueError (e.g. an unknown recipe argument) as its one line; another
    error of a config file's own code as its traceback's last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in message and lines:
        return lines[-1].removeprefix("ValueError: ")
    return " ".join(lines)
