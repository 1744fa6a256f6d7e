"""The canonical row every source yields, and the mapping from on-disk layouts.

A row is a plain dict:

  id        str, unique within the source
  where     str, "file:line" (or similar) for error messages
  images    list of RGB uint8 arrays (H, W, 3), decoded
  videos    list of absolute video paths (decoded later by the video transforms)
  messages  list of chat messages {"role", "content"} or None
  prompt    str user text or None ("<image>" / "<video>" mark where inputs go)
  solution  str ground truth or None
  task      str task / ability tag or None (routes the reward)
  extra     dict of the remaining fields

On-disk rows follow the difficulty work (ms-swift: `images`, `messages`,
`solution`) or its raw form (`image_paths`, `prompt`, `ground_truth`,
`task_type`), or verl's (`prompt` as a message list, `reward_model.ground_truth`,
`ability` / `data_source`). Image paths are relative to a data root.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from mmjax.data import images as images_lib
from mmjax.data.skips import Skipped, skip_or_raise

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("images", "image_paths", "image")
VIDEO_KEYS = ("videos", "video_paths", "video")
SOLUTION_KEYS = ("solution", "ground_truth", "answer")
TASK_KEYS = ("task", "task_type", "ability", "data_source")
ID_KEYS = ("id", "uid", "index")

# Fields a QA source needs: "prompt" is satisfied by `messages` or `prompt`.
QA_FIELDS = ("prompt", "solution")


def _first(raw: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for key in keys:
        if key in raw and raw[key] is not None:
            return key, raw[key]
    return None, None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):
        return list(value.tolist())
    return [value]


def resolve_path(path: str, data_root: str | None) -> str:
    if data_root is None or os.path.isabs(path):
        return path
    return os.path.join(data_root, path)


# What an image entry may be once unwrapped: a path, encoded bytes, or an image
# already decoded (TFDS yields arrays). Anything else must be refused here:
# `open()` takes an int as a file descriptor, so a stray `3` or `true` in a
# JSON row would read (and close) the process's own files.
_PATH_TYPES = (str, os.PathLike)
_BYTES_TYPES = (bytes, bytearray, memoryview)
_DECODED_TYPES = (np.ndarray, Image.Image)


def _shown(value: Any) -> str:
    """The type and a short repr, for errors: "int 3", "list [1, 2]", "null"."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _path(value: Any, what: str) -> str:
    """`value` as a non-empty str path, or ValueError naming `what`."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise ValueError(f"{what} is {_shown(value)}, not a path")
    if not path:
        raise ValueError(f"{what} is an empty path")
    return path


def _dict_entry(item: Mapping[str, Any], keys: Sequence[str], what: str) -> tuple[str, Any]:
    """The first non-empty value under `keys` (HF / verl keep a path list or a path)."""
    for key in keys:
        value = item.get(key)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value is not None and not (isinstance(value, (str, *_BYTES_TYPES)) and not value):
            return key, value
    raise ValueError(f"{what} has no bytes or path: keys {sorted(item)}")


def _image_ref(item: Any, what: str = "image entry") -> str | bytes | np.ndarray | Image.Image:
    """A path, encoded bytes or decoded image from a row's image entry (HF / verl dicts too)."""
    if isinstance(item, Mapping):
        key, item = _dict_entry(item, ("bytes", "path", "image", "url"), what)
        what = f"{what}[{key!r}]"
        if key == "bytes" and not isinstance(item, _BYTES_TYPES):
            raise ValueError(f"{what} is {_shown(item)}, not bytes")
    if isinstance(item, _BYTES_TYPES):
        return bytes(item)
    if isinstance(item, _DECODED_TYPES):
        return item
    if isinstance(item, _PATH_TYPES):
        return _path(item, what)
    raise ValueError(f"{what} is {_shown(item)}, not a path, bytes or a {{bytes, path}} dict")


def _video_ref(item: Any, what: str = "video entry") -> str:
    """A path from a row's video entry; videos are decoded from files, so only paths."""
    if isinstance(item, Mapping):
        key, item = _dict_entry(item, ("path", "video", "url"), what)
        what = f"{what}[{key!r}]"
    return _path(item, what)


def _solution(raw: Mapping[str, Any]) -> Any:
    _, value = _first(raw, SOLUTION_KEYS)
    if value is None and isinstance(raw.get("reward_model"), Mapping):
        value = raw["reward_model"].get("ground_truth")
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return None if value is None else str(value).strip()


def _messages_and_prompt(raw: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    messages, prompt = None, None
    if isinstance(raw.get("messages"), (list, tuple)) or hasattr(raw.get("messages"), "tolist"):
        messages = [dict(m) for m in _as_list(raw["messages"])]
    if isinstance(raw.get("prompt"), str):
        prompt = raw["prompt"]
    elif raw.get("prompt") is not None and messages is None:
        messages = [dict(m) for m in _as_list(raw["prompt"])]  # verl: prompt is a message list
    # ms-swift rows carry the reference answer as the assistant turn; keep the prompt only.
    if messages:
        messages = [m for m in messages if m.get("role") != "assistant"] or None
    return messages, prompt


def normalize_row(raw: Mapping[str, Any], *, where: str, data_root: str | None,
                  required: Sequence[str] = (), decode_images: bool = True,
                  strict: bool = False, default_id: str = "") -> dict[str, Any] | Skipped:
    """Maps an on-disk row to the canonical row, or a `Skipped` naming the problem."""
    if not isinstance(raw, Mapping):
        return skip_or_raise(strict, "bad_row", where, f"row is a {type(raw).__name__}, not an object")

    try:
        messages, prompt = _messages_and_prompt(raw)
        image_key, image_value = _first(raw, IMAGE_KEYS)
        image_refs = [_image_ref(x, f"{image_key}[{i}]") for i, x in enumerate(_as_list(image_value))]
        video_key, video_value = _first(raw, VIDEO_KEYS)
        video_refs = [_video_ref(v, f"{video_key}[{i}]") for i, v in enumerate(_as_list(video_value))]
    except (TypeError, ValueError) as e:
        return skip_or_raise(strict, "bad_row", where, f"{type(e).__name__}: {e}")
    solution = _solution(raw)
    task_key, task = _first(raw, TASK_KEYS)
    present = {"prompt": messages is not None or prompt is not None,
               "solution": solution is not None, "images": bool(image_refs),
               "videos": bool(video_refs), "task": task is not None}
    for field in required:
        if not present.get(field, raw.get(field) is not None):
            return skip_or_raise(strict, "missing_field", where,
                                 f"row has no {field!r} field (keys: {sorted(raw)})")

    decoded = []
    for ref in image_refs:
        name = ref if isinstance(ref, str) else (
            "<embedded bytes>" if isinstance(ref, bytes) else "<decoded image>")
        path = resolve_path(ref, data_root) if isinstance(ref, str) else ref
        if not decode_images:
            decoded.append(path)
            continue
        try:
            image = images_lib.decode_image(path)
        except FileNotFoundError:
            return skip_or_raise(strict, "image_missing", f"{where} ({name})", f"no such file {path}")
        except images_lib.ImageTooLarge as e:  # its message says what and why; the type adds nothing
            return skip_or_raise(strict, "image_unreadable", f"{where} ({name})", str(e))
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on bad data.
            return skip_or_raise(strict, "image_unreadable", f"{where} ({name})",
                                 f"{type(e).__name__}: {e}")
        if not isinstance(ref, _DECODED_TYPES) and images_lib.over_pixel_limit(image.shape[1], image.shape[0]):
            # PIL decoded it and only warned, without a name (decode_image: we follow PIL); name it.
            logger.warning("%s (%s): %d x %d image is over PIL.Image.MAX_IMAGE_PIXELS = %d; decoded anyway "
                           "(PIL refuses only over twice that)", where, name, image.shape[1], image.shape[0],
                           Image.MAX_IMAGE_PIXELS)
        decoded.append(image)

    videos = [resolve_path(v, data_root) for v in video_refs]
    _, row_id = _first(raw, ID_KEYS)
    used = set(IMAGE_KEYS + VIDEO_KEYS + SOLUTION_KEYS + ID_KEYS + ("messages", "prompt", task_key))
    return {
        "id": str(row_id) if row_id is not None else default_id,
        "where": where,
        "images": decoded,
        "videos": videos,
        "messages": messages,
        "prompt": prompt,
        "solution": solution,
        "task": None if task is None else str(task),
        "extra": {k: v for k, v in raw.items() if k not in used},
    }
