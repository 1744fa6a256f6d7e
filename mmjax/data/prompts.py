"""Prompt text and chat messages for the jigsaw tasks (SPEC 1.1-1.4) and QA rows.

Messages use the Hugging Face chat format the Qwen2.5-VL template reads: a user
turn whose content is a list of {"type": "text", "text": ...}, {"type": "image"}
and {"type": "video"} parts, in order. The answer-format sentence comes from
`mmjax.containers.CONTAINERS`, the same table the reward checker uses, so a
prompt and its checker always agree on the container.

QA rows have two layouts (`LAYOUTS`): "image_first" (default) keeps each placeholder
where the row puts it and, without placeholders, puts the inputs first (the ms-swift /
verl convention); "question_first" puts all of a user turn's text before its images and
videos, as the released CMAB scoring script builds its prompt ([question text, image]).
The CMAB `code` definition averages attention over the prompt text before the first
image, so its scores are comparable with the released ones only in that layout, where
that text holds the question (mmjax.difficulty.cmab.DEFAULT_LAYOUT).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from mmjax import containers

Content = list[dict[str, Any]]

# SPEC 2.3: the difficulty work's system prompt asks for <think> reasoning and an
# <answer> container; the container sentence is shared with the checker.
SYSTEM_PROMPT_TEMPLATE = "You are a helpful assistant. {instruction}"

IMAGE_FIRST = "image_first"
QUESTION_FIRST = "question_first"
LAYOUTS = (IMAGE_FIRST, QUESTION_FIRST)


def check_layout(layout: str) -> str:
    """Returns `layout` if it is one of `LAYOUTS`, else raises ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown prompt layout {layout!r}; expected one of {LAYOUTS}")
    return layout


def format_instruction(container: str) -> str:
    """The reasoning/answer format sentence for `container` ("answer" or "boxed")."""
    return containers.CONTAINERS[containers.check_container(container)]


def example_order(num_pieces: int) -> str:
    """A fixed example answer: a rotation of 1..K, so it is a valid permutation."""
    return ",".join(str(i) for i in [*range(2, num_pieces + 1), 1])


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _numbered_inputs(label: str, kind: str, count: int) -> Content:
    content: Content = []
    for i in range(1, count + 1):
        content += [_text(f"{label} {i}: "), {"type": kind}, _text("\n")]
    return content


def image_jigsaw_content(rows: int, cols: int, container: str) -> Content:
    k = rows * cols
    task = (
        f"The tiles above are the pieces of one image cut into a {rows}x{cols} grid, shown in"
        f" shuffled order. Arrange the tiles into the original {rows}x{cols} layout: give, for"
        " each position of the grid in raster order (left to right, top to bottom), the number"
        f" of the tile that belongs there, as {k} tile indices separated by commas."
        f" For example: {example_order(k)}.\n"
    )
    return _numbered_inputs("Tile", "image", k) + [_text(task + format_instruction(container))]


def video_jigsaw_content(num_clips: int, container: str) -> Content:
    task = (
        f"The {num_clips} clips above are consecutive segments of one video, shown in shuffled"
        " order. Put the clips in chronological order: give the clip numbers from the earliest"
        f" segment to the latest, separated by commas. For example: {example_order(num_clips)}.\n"
    )
    return _numbered_inputs("Clip", "video", num_clips) + [_text(task + format_instruction(container))]


def depth_jigsaw_content(num_points: int, container: str) -> Content:
    task = (
        f"\nThe image shows {num_points} red markers numbered 1 to {num_points}. Order the"
        " marked points by their distance from the camera, from the nearest to the farthest:"
        " give the marker numbers separated by commas."
        f" For example: {example_order(num_points)}.\n"
    )
    return [{"type": "image"}, _text(task + format_instruction(container))]


def user_message(content: Content) -> dict[str, Any]:
    return {"role": "user", "content": content}


def system_message(container: str) -> dict[str, Any]:
    text = SYSTEM_PROMPT_TEMPLATE.format(instruction=format_instruction(container))
    return {"role": "system", "content": [_text(text)]}


_PLACEHOLDER = re.compile(r"(<image>|<video>)")


def text_to_content(text: str, num_images: int, num_videos: int = 0, layout: str = IMAGE_FIRST) -> Content:
    """Splits "<image>"/"<video>" placeholders out of `text` into content parts.

    "image_first": placeholders stay in place; without any, the inputs go first (the
    ms-swift / verl convention). "question_first": see `question_first`.
    Raises ValueError when the placeholder count does not match the inputs.
    """
    pieces = [p for p in _PLACEHOLDER.split(text) if p]
    found_images = pieces.count("<image>")
    found_videos = pieces.count("<video>")
    if found_images == 0 and found_videos == 0:
        pieces = ["<image>"] * num_images + ["<video>"] * num_videos + pieces
    elif (found_images, found_videos) != (num_images, num_videos):
        raise ValueError(f"prompt has {found_images} <image> and {found_videos} <video> placeholders"
                         f" for {num_images} images and {num_videos} videos")
    content: Content = []
    for piece in pieces:
        if piece == "<image>":
            content.append({"type": "image"})
        elif piece == "<video>":
            content.append({"type": "video"})
        else:
            content.append(_text(piece))
    return question_first(content) if check_layout(layout) == QUESTION_FIRST else content


def question_first(content: Content) -> Content:
    """All text parts first, joined into one (in order), then the visual parts in order.

    The released CMAB script's layout: one text part, then the image. Its question is the
    row's text after the placeholder; text before a placeholder is kept here too, so a
    multi-image question may read oddly ("Compare  and ?") but loses no words.
    """
    texts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
    others = [part for part in content if not (isinstance(part, dict) and part.get("type") == "text")]
    pieces = [part.get("text", "") for part in texts]
    if not all(isinstance(piece, str) for piece in pieces):
        raise ValueError(f"a text part's 'text' is not a string: {pieces!r:.80}")
    return ([_text("".join(pieces))] if texts else []) + others


def qa_messages(messages: Sequence[dict[str, Any]] | None, prompt: str | None,
                num_images: int, num_videos: int, container: str,
                system_prompt: bool = True, layout: str = IMAGE_FIRST) -> list[dict[str, Any]]:
    """Chat messages for a question-answer row (difficulty-work layout).

    String contents are split at their placeholders; a row's own system message
    is kept, otherwise the SPEC 2.3 system prompt is added when `system_prompt`.
    `layout` orders each user turn (module doc); it applies to list contents too.
    """
    check_layout(layout)
    if messages is None:
        if prompt is None:
            raise ValueError("row has neither messages nor prompt")
        messages = [{"role": "user", "content": prompt}]
    out, images_left, videos_left = [], num_images, num_videos
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            if message.get("role") == "user":
                n_img = min(content.count("<image>"), images_left) if "<image>" in content else images_left
                n_vid = min(content.count("<video>"), videos_left) if "<video>" in content else videos_left
                content = text_to_content(content, n_img, n_vid, layout)
                images_left, videos_left = images_left - n_img, videos_left - n_vid
            else:
                content = [_text(content)]
        elif layout == QUESTION_FIRST and message.get("role", "user") == "user" and content is not None:
            content = question_first(list(content))
        out.append({"role": message.get("role", "user"), "content": list(content)})
    if images_left or videos_left:
        raise ValueError(f"{images_left} images and {videos_left} videos have no place in the prompt")
    if system_prompt and out[0]["role"] != "system":
        out.insert(0, system_message(container))
    return out
