"""Replacing a folder as a whole, so a killed save never leaves a mix of two versions.

A new version of `path` is built beside it (`staging_path`: `<path>.tmp-<pid>`) and swapped
in by two renames (`replace_path`): `path` -> `<path>.old-<pid>`, new -> `path`; only then is
the old one deleted. So at every instant `path` is the complete old version or the complete
new one, except between the two renames, when it is absent and the complete old version sits
at `<path>.old-<pid>`; `recover_replace` (run by the next save) puts that back and deletes
the rest. Used by model checkpoints and HF exports alike; a leaf: it imports nothing of mmjax.
"""

from __future__ import annotations

import os
import re
import shutil

_STAGING, _ASIDE = "tmp", "old"
# Leftovers of older mmjax versions, removed like a `.tmp-<pid>`: export_hf's staging folder,
# save_model's `.replacement`.
_LEGACY_STAGING = (r"\.export-tmp", r"\.replacement")
_ORBAX_TMP = r"(?:\.orbax-checkpoint-tmp[^/]*)?"  # Orbax builds each directory under this suffix


def staging_path(path: str) -> str:
    """Where this process builds the next version of `path`."""
    return f"{path}.{_STAGING}-{os.getpid()}"


def replace_leftovers(path: str) -> tuple[list[str], list[str]]:
    """(moved-aside complete old versions, unfinished new versions) found beside `path`."""
    parent, name = os.path.split(path)
    if not os.path.isdir(parent):
        return [], []
    stem = re.escape(name)
    aside = re.compile(rf"{stem}\.{_ASIDE}-\d+")
    staging = re.compile(rf"{stem}(?:\.{_STAGING}-\d+|{'|'.join(_LEGACY_STAGING)})?{_ORBAX_TMP}")
    olds, partial = [], []
    for n in sorted(os.listdir(parent)):
        if n == name:
            continue
        if aside.fullmatch(n):
            olds.append(os.path.join(parent, n))
        elif staging.fullmatch(n):
            partial.append(os.path.join(parent, n))
    return olds, partial


def recover_replace(path: str) -> None:
    """Undo what an interrupted `replace_path` (a killed save) left beside `path`.

    If `path` is absent but its moved-aside old version exists, that (complete) version is
    renamed back; every other leftover (unfinished new versions, an old version that was
    being deleted) is removed. Saves to one path must not run concurrently.
    """
    olds, partial = replace_leftovers(path)
    if olds and not os.path.lexists(path):
        if len(olds) > 1:
            raise FileExistsError(f"{path}: missing, and interrupted saves left several old versions "
                                  f"beside it: {olds}; rename the one to keep to {path}")
        os.rename(olds.pop(), path)
    for leftover in olds + partial:
        _remove(leftover)


def replace_path(new: str, path: str) -> None:
    """Put the finished folder `new` at `path`, replacing what is there (see the module doc)."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    old = f"{path}.{_ASIDE}-{os.getpid()}"
    os.rename(path, old)
    os.rename(new, path)
    _remove(old)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def atomic_write_text(path: str, text: str) -> None:
    """Write a whole text file or leave the old one: written beside it, then renamed over it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
