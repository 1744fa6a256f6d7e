"""Config sections made from dataclasses: each default, help line and allowed set is written once.

A recipe's ConfigDict (configs/*.py, `mmjax.jobs.recipe.base()`) is built from the dataclasses
the jobs turn its sections into (GRPOConfig, OptimizerConfig, ...), big_vision style: the
trainer's own config classes are the schema, there is no mirror of them.

    GRPO = Section((GRPOConfig,))
    c.grpo = GRPO.build()            # ConfigDict of GRPOConfig's fields and defaults
    GRPO.fields("grpo")              # FieldInfo(path, default, help, choices, source) per field
    check(config, schema)            # every value outside its field's choices, one line each
    describe(config, schema)         # --help_config: value, default, help and source of each field

A `Section` is the fields of one or more dataclasses (a name two of them share must have the
same default there), less `exclude`, plus child sections. A dataclass field whose default is a
dataclass (e.g. `DataConfig.selection: SelectionConfig`) is a child section of its own. A field
whose default is a dict (`rewards.weights`) is one leaf: its keys are the user's.

Field metadata (mmjax.config_help.help_text): "help", the one-line help with its source;
"choices", the allowed values (checked by `mmjax.config_help.choice_error`, the one check).
A field made with `borrowed(cls, name, ...)` takes its default from the dataclass that consumes
it, so that default too is written once.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

from mmjax.config_help import CHOICES, HELP, allowed_values, choice_error, help_text

FROM = "default_from"  # metadata: "module.Class.field" a borrowed default comes from


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One leaf of a config: where it is, its default, help and allowed values, and its dataclass."""

    path: str  # dotted, without "config.": "grpo.num_generations"
    default: Any
    help: str
    choices: Any  # a collection, a function giving one, or None (any value)
    source: str  # the dataclass the field belongs to, e.g. "mmjax.rl.grpo.GRPOConfig"
    default_from: str = ""  # for a borrowed default: the consumer's "module.Class.field"

    def allowed(self) -> tuple | None:
        return allowed_values(self.choices)


@dataclasses.dataclass(frozen=True)
class Section:
    """A ConfigDict section: the fields of `classes`, less `exclude`, plus `children` sections.

    `help`: one-line help for fields whose dataclass has none (a class this package cannot
    annotate); a field's own metadata wins.
    """

    classes: tuple[type, ...] = ()
    exclude: frozenset[str] = frozenset()
    children: Mapping[str, Section] = dataclasses.field(default_factory=dict)
    help: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_children(self, **children: Section) -> Section:
        return dataclasses.replace(self, children={**self.children, **children})

    def _fields(self) -> tuple[dict[str, tuple[dataclasses.Field, type, Any]], dict[str, Section]]:
        """name -> (field, its class, default) for the leaves; name -> Section for nested dataclasses."""
        leaves: dict[str, tuple[dataclasses.Field, type, Any]] = {}
        nested: dict[str, Section] = {}
        for cls in self.classes:
            for f in dataclasses.fields(cls):
                if not f.init or f.name in self.exclude:
                    continue
                default = _default(f, cls)
                if dataclasses.is_dataclass(default):
                    nested[f.name] = Section((type(default),))
                    continue
                if f.name in leaves:
                    first = leaves[f.name]
                    if first[2] != default:
                        raise ValueError(f"{f.name} has two defaults: {first[2]!r} in {_name(first[1])} and "
                                         f"{default!r} in {_name(cls)}")
                    if HELP in f.metadata and HELP not in first[0].metadata:
                        leaves[f.name] = (f, cls, default)
                    continue
                leaves[f.name] = (f, cls, default)
        for name in self.children:
            if name in leaves or name in nested:
                raise ValueError(f"section child {name!r} is also a field of {[_name(c) for c in self.classes]}")
        return leaves, {**nested, **self.children}

    def build(self) -> ml_collections.ConfigDict:
        """The section as a ConfigDict, every field at its default."""
        leaves, children = self._fields()
        out = ml_collections.ConfigDict()
        for name, (f, cls, default) in leaves.items():
            out[name] = _config_value(default, _hint(cls, f.name))
        for name, child in children.items():
            out[name] = child.build()
        return out

    def fields(self, prefix: str = "") -> Iterator[FieldInfo]:
        """Every leaf of the section, children included, in build order."""
        leaves, children = self._fields()
        dot = f"{prefix}." if prefix else ""
        for name, (f, cls, default) in leaves.items():
            yield FieldInfo(path=dot + name, default=default, help=f.metadata.get(HELP) or self.help.get(name, ""),
                            choices=f.metadata.get(CHOICES), source=_name(cls), default_from=f.metadata.get(FROM, ""))
        for name, child in children.items():
            yield from child.fields(dot + name)

    def sections(self, prefix: str = "") -> Iterator[str]:
        """The dotted paths of the child sections (not of dict-valued leaves)."""
        _, children = self._fields()
        dot = f"{prefix}." if prefix else ""
        for name, child in children.items():
            yield dot + name
            yield from child.sections(dot + name)


def section(*classes: type, exclude=(), help: Mapping[str, str] | None = None,  # noqa: A002
            **children: Section) -> Section:
    """Section(classes, exclude, children, help) with keyword children."""
    return Section(tuple(classes), frozenset(exclude), dict(children), dict(help or {}))


def borrowed(cls: type, name: str, text: str, choices=None) -> dataclasses.Field:
    """A dataclass field whose default is the default of `cls`'s field `name` (written once, there)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = {**help_text(text, choices), FROM: f"{_name(cls)}.{name}"}
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory, metadata=meta)
    return dataclasses.field(default=f.default, metadata=meta)


def defaults(schema: Section) -> dict[str, Any]:
    """dotted path -> default of every leaf (what `schema.build()` holds)."""
    return {info.path: info.default for info in schema.fields()}


# ---- checking a config ------------------------------------------------------------------------

def check(config, schema: Section) -> list[str]:
    """"config.<path>=<value>: expected one of (...)" for each field of `config` outside its choices.

    Fields the config lacks (a recipe without that section) are not checked.
    """
    errors = []
    for info in schema.fields():
        if info.choices is None:
            continue
        found, value = _get(config, info.path)
        if found and not (value is None and info.default is None):
            error = choice_error(f"config.{info.path}", value, info.choices)
            if error:
                errors.append(error)
    return errors


def close_keys(config, dotted: str, n: int = 3) -> list[str]:
    """The config's dotted paths closest to `dotted` (difflib): whole paths first, then paths
    whose last key is close to its last key (`num_generations` -> `grpo.num_generations`)."""
    paths = list(_paths(config))
    found = difflib.get_close_matches(dotted, paths, n=n, cutoff=0.6)
    last = dotted.rsplit(".", 1)[-1]
    by_last: dict[str, list[str]] = {}
    for path in paths:
        by_last.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    for key in difflib.get_close_matches(last, list(by_last), n=n, cutoff=0.75):
        found += [p for p in by_last[key] if p not in found]
    return found[:n]


# ---- describing a config (--help_config) ------------------------------------------------------

def describe(config, schema: Section, title: str = "config") -> list[str]:
    """One line per field: `[*] path = value  (default d; one of ...)  help  [source]`.

    `*` marks a value that differs from the dataclass default (the recipe or the command line
    set it). Fields of the config no schema knows are listed last, as such.
    """
    infos = [i for i in schema.fields() if _get(config, i.path)[0]]
    lines = [f"{title}: {len(infos)} fields; * = set by the recipe or the command line "
             f"(override with --config.<field>=<value>)"]
    for info in infos:
        value = _plain(_get(config, info.path)[1])
        changed = "*" if value != _plain(info.default) else " "
        allowed = info.allowed()
        extra = f"default {info.default!r}" + (f"; one of {' | '.join(map(repr, allowed))}" if allowed else "")
        source = info.default_from or info.source
        lines.append(f"{changed} {info.path} = {value!r}  ({extra})  {info.help or '(no help)'}  [{source}]")
    for path in unknown_fields(config, schema):
        lines.append(f"? {path} = {_plain(_get(config, path)[1])!r}  (not in the schema: this recipe's own field)")
    return lines


def unknown_fields(config, schema: Section) -> list[str]:
    """Leaves of `config` that no field of `schema` describes."""
    known = {i.path for i in schema.fields()}
    return [p for p in _leaf_paths(config, known) if p not in known]


# ---- helpers -------------------------------------------------------------------------------

def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _default(f: dataclasses.Field, cls: type) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{_name(cls)}.{f.name} has no default: a config section needs one for every field")


def _hint(cls: type, name: str):
    try:
        return typing.get_type_hints(cls).get(name)
    except Exception:  # noqa: BLE001  an annotation that does not resolve: no type for None defaults
        return None


_OVERRIDABLE = (bool, int, float, str, tuple)


def _optional_type(hint) -> type | None:
    """T of `T | None` (tuple for `tuple[...] | None`) when T can be overridden from the command line."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) != 1:
        return None
    arg = typing.get_origin(args[0]) or args[0]
    return arg if arg in _OVERRIDABLE else None


def _config_value(default, hint):
    """What a ConfigDict holds for `default`: dicts as ConfigDicts, lists as tuples, and None as a
    typed FieldReference, so that `--config.grpo.delta=3.0` can set a field whose default is None."""
    if isinstance(default, Mapping):
        return ml_collections.ConfigDict(dict(default))
    if isinstance(default, list):
        return tuple(default)
    if default is None:
        field_type = _optional_type(hint)
        if field_type is not None:
            return ml_collections.FieldReference(None, field_type=field_type)
    return default


def _get(config, dotted: str) -> tuple[bool, Any]:
    node = config
    for key in dotted.split("."):
        if not hasattr(node, "keys") or key not in node:
            return False, None
        node = node[key]
    return True, node


def _plain(value):
    """ConfigDicts as dicts and lists as tuples, for comparing and printing."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return tuple(value)
    return value


def _paths(config, prefix: str = "") -> Iterator[str]:
    """Every dotted path of `config`, sections and leaves."""
    for key in config.keys():
        path = f"{prefix}{key}"
        yield path
        value = config[key]
        if hasattr(value, "keys"):
            yield from _paths(value, path + ".")


def _leaf_paths(config, known: set[str], prefix: str = "") -> Iterator[str]:
    """Leaves of `config`, a known dict-valued field (rewards.weights) counting as one leaf."""
    for key in config.keys():
        path = f"{prefix}{key}"
        value = config[key]
        if hasattr(value, "keys") and path not in known:
            yield from _leaf_paths(value, known, path + ".")
        else:
            yield path


def unknown_field(config, fields, file: str) -> str | None:
    """The first of the dotted override `fields` that names no field of `config`, as one line
    naming the closest real fields and what its parent has (mmjax.main, mmjax.sweep)."""
    for field in fields:
        node, keys = config, field.split(".")
        for depth, key in enumerate(keys):
            if not hasattr(node, "keys"):
                break  # below a leaf (e.g. a tuple index): not ours to judge
            if key not in node:
                parent = ".".join(["config", *keys[:depth]])
                close = close_keys(config, field)
                hint = f"; did you mean {' or '.join('config.' + c for c in close)}?" if close else ""
                return (f"--config.{field}: {file} has no field config.{'.'.join(keys[:depth + 1])}{hint} "
                        f"({parent} has {sorted(node.keys())})")
            node = node[key]
    return None
