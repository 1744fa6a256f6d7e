"""Checks of a run's inputs that need nothing built, made by `mmjax.main` before anything is.

A missing data file used to surface as a FileNotFoundError traceback 8-28 s into a run, once
the model was built; a workdir that is a file, as one from os.makedirs. Here each path the
config names is checked to exist and to be a file or a folder as its reader wants, and the
first one that is not raises PreflightError: one line naming the field and the path.

Only existence and kind are checked: what is inside a file (rows, columns, weights) is left to
the readers in mmjax.jobs.build and mmjax.eval, which report it better. This module imports
nothing heavy, so the checks run in well under a second.
"""

from __future__ import annotations

import os

# config.data.source -> what its config.data.path must be (mmjax.jobs.build.source). The
# synthetic sources (colour_choice, shapes_vqa) read no path and are not listed.
PATH_KINDS = {
    "jsonl": "file",
    "parquet": "file",
    "image_folder": "folder",
    "video_folder": "folder",
    "rgbd_folder": "file or folder",  # index.jsonl or the folder holding it
}
# Jobs that do not read some of the inputs (mmjax/jobs/<mode>.py): eval reads its benchmark
# files, not config.data; score reads every row of config.data, ignoring data.selection; plan
# reads no data at all (only the config).
# A mode not named here is checked for everything it may read.
IGNORED = {"eval": ("data", "selection"), "score": ("selection",), "plan": ("data", "selection")}
SCORES = "scores.parquet"  # what a scoring workdir holds (mmjax.difficulty.score_file.SCORES)
# config.eval.benchmarks.<name> = this: no file, but synthetic rows of the benchmark's format that
# the job writes itself (mmjax.jobs.build.SYNTHETIC_BENCHMARK, which is this value).
SYNTHETIC_BENCHMARK = "synthetic"


class PreflightError(ValueError):
    """An input the config names is missing or of the wrong kind; the message is one line."""


def check_inputs(config, workdir: str) -> None:
    """Raise PreflightError for the first input of `config` (or the `workdir`) that cannot be used."""
    check_workdir(workdir)
    ignored = IGNORED.get(config.get("mode", ""), ())
    _check("config.model.hf_dir", _get(config, "model.hf_dir"), "folder")
    _check("config.init_from", _get(config, "init_from"), "folder")
    if "data" not in ignored:
        _check_data(config)
    if "selection" not in ignored:
        _check_score_file(_get(config, "data.selection.score_file"))
    if config.get("mode") == "eval":
        for name, path in (_get(config, "eval.benchmarks") or {}).items():
            if path != SYNTHETIC_BENCHMARK:  # an unsupported format is build.py's to report
                _check(f"config.eval.benchmarks.{name}", path, "file")
        _check("config.eval.data_root", _get(config, "eval.data_root"), "folder")


def check_workdir(workdir: str) -> None:
    """The workdir must be a folder or creatable as one: it, and each parent that exists, is a folder."""
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        what = "exists and is not a directory" if path == os.path.abspath(workdir) else f"{path} is not a directory"
        raise PreflightError(f"--workdir {workdir}: {what}")


def _check_data(config) -> None:
    source = _get(config, "data.source")
    kind = PATH_KINDS.get(source)
    if kind is not None:  # an unknown source is build.py's to report, with the allowed ones
        path = _get(config, "data.path")
        if not path:
            raise PreflightError(f"config.data.source={source!r} needs config.data.path (a {kind})")
        _check("config.data.path", path, kind, f" (data.source={source!r} reads a {kind})")
    _check("config.data.data_root", _get(config, "data.data_root"), "folder")


def _check_score_file(path) -> None:
    """A score file (.parquet / .jsonl) or a scoring workdir holding scores.parquet."""
    if not path:
        return
    _check("config.data.selection.score_file", path, "file or folder")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, SCORES)):
        raise PreflightError(f"config.data.selection.score_file={path!r}: a folder without {SCORES}; run the "
                             f"scoring job (mode=score) on it first{_relative(path)}")


def _check(field: str, path, kind: str, why: str = "") -> None:
    """`path` (skipped when empty) must exist and be a `kind`: file, folder or "file or folder"."""
    if not path:
        return
    path = str(path)
    if not os.path.exists(path):
        noun = {"file": "file", "folder": "directory"}.get(kind, "file or directory")
        raise PreflightError(f"{field}={path!r}: no such {noun}{why}{_relative(path)}")
    if kind == "file" and os.path.isdir(path):
        raise PreflightError(f"{field}={path!r} is a directory, not a file{why}")
    if kind == "folder" and not os.path.isdir(path):
        raise PreflightError(f"{field}={path!r} is a file, not a directory{why}")


def _relative(path: str) -> str:
    return "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"


def _get(config, dotted: str):
    """config.<dotted>, or None where a recipe lacks the field."""
    node = config
    for key in dotted.split("."):
        if not hasattr(node, "keys") or key not in node:
            return None
        node = node[key]
    return node
