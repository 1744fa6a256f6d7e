"""Benchmark files (JSONL + image files) -> checked evaluation items, one reader per format.

Every format is a JSON-lines file, one object per line (blank lines ignored); image paths
are relative to a data root (default: the file's folder). Field names follow the public
benchmarks' own releases where they have one. The formats (`FORMATS`): mathvista
(MathVista testmini), ocrbench (OCRBench, scored by the OCR match of SPEC 2.3), mmstar,
mmvp (pairs of rows, a pair counts only if both are right), da2k (DA-2K relative depth,
points drawn as SPEC 1.3 markers), jigsaw (the image jigsaw solve rate, cut by
`mmjax.data.jigsaw.ImageJigsaw`, SPEC 1.1), qa (rows in the training data's own layout,
scored by their task's checker), mmmu (MMMU validation, several images per question placed
where its "<image k>" placeholders are) and hallusionbench (HallusionBench yes/no questions,
some asked without their figure; question, figure and question-pair accuracy). Each format's
fields, scoring and groups are listed on `read_benchmark`.

A malformed row is an error, never a skip: skipping would silently change what a score
is out of. `BenchmarkError` names the file, the line and the field; a missing file, bad
JSON, a missing or mistyped field, a missing or unreadable image and an inconsistent row
(an answer outside its choices, a point outside its image, an MMVP pair without its
partner) all raise it before the model runs.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from mmjax import containers
from mmjax.config_help import help_text
from mmjax.data import jigsaw as jigsaw_lib
from mmjax.data import prompts
from mmjax.data.markers import draw_markers
from mmjax.data.skips import DataError
from mmjax.data.tasks import make_sample
from mmjax.rewards.choice import parse_choice
from mmjax.rewards.ocr import normalise_text

CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices."
MMMU_OPEN_INSTRUCTION = "Answer the question using a single word or phrase."  # MMMU's own open-question prompt
YESNO_INSTRUCTION = "Answer with yes or no."
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DA2K_LABELS = ("A", "B")
DA2K_QUESTION = (
    "Two points on the image are marked with red circles labelled A and B. Which point is closer to the camera?\n"
    "Options:\n(A) point A\n(B) point B\n" + CHOICE_INSTRUCTION)


class BenchmarkError(ValueError):
    """A benchmark file, or one of its rows, that cannot be evaluated as written."""


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How rows are read: where images live, the default jigsaw grid, the seed of its permutations.

    data_root: image paths are relative to this (None: the benchmark file's folder).
    limit: read only the first `limit` rows (0 = all); a smoke test, not a score.
    """

    data_root: str | None = dataclasses.field(default=None, metadata=help_text(
        "image paths are relative to this (None / '' = each benchmark file's folder)"))
    jigsaw_rows: int = dataclasses.field(default=3, metadata=help_text(
        "the jigsaw grid of rows without rows / cols; SPEC 1.1 default 3x3"))
    jigsaw_cols: int = dataclasses.field(default=3, metadata=help_text("the same, columns; SPEC 1.1"))
    seed: int = dataclasses.field(default=0, metadata=help_text(
        "the jigsaw permutations and the sampling keys (temperature > 0); mmjax"))
    container: str = dataclasses.field(default=containers.ANSWER, metadata=help_text(
        "answer container of prompt and checker: answer (paper) | boxed (released Visual Jigsaw code); SPEC 1.4",
        choices=tuple(containers.CONTAINERS)))
    limit: int = dataclasses.field(default=0, metadata=help_text(
        "first N rows of each file (0 = all; even for MMVP pairs): a smoke test, not a score"))


@dataclasses.dataclass(frozen=True)
class Item:
    """One question of a benchmark, checked and ready to render.

    gold: what the checker compares with (an option letter, a math answer, a jigsaw order,
    "yes" / "no"); accepted: every accepted answer (OCR, MMMU open questions; else just gold);
    groups: group kind -> the row's values (a row may have several skills); pair: the set of
    questions that count together only if all are right (an MMVP pair, a HallusionBench
    question pair); figure: the same for HallusionBench's figures (None: in no figure set);
    record: the row's fields kept in the answers file.
    """

    benchmark: str
    format: str
    index: int
    id: str
    where: str
    scorer: str  # choice | math | ocr | jigsaw | yesno
    prompt: str  # the user text (the jigsaw's is built by its task)
    image_paths: tuple[str, ...]
    image_sizes: tuple[tuple[int, int], ...]  # (height, width), EXIF orientation applied
    gold: str
    accepted: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    pair: str | None = None
    figure: str | None = None
    points: tuple[tuple[int, int], ...] = ()
    grid: tuple[int, int] | None = None
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# ---- reading a file ---------------------------------------------------------------------------

class _Row:
    """One parsed line with field access whose errors name the file, line and field."""

    def __init__(self, raw: dict, where: str, index: int):
        self.raw, self.where, self.index = raw, where, index

    def fail(self, message: str) -> BenchmarkError:
        return BenchmarkError(f"{self.where}: {message}")

    def get(self, *keys: str, required: bool = True, kind: type | tuple[type, ...] | None = None) -> Any:
        """The first present, non-null field among `keys` (aliases), type-checked."""
        for key in keys:
            value = self.raw.get(key)
            if value is None:
                continue
            kinds = kind if isinstance(kind, tuple) else (kind,)
            # JSON true/false are Python ints: refuse them where a number is asked for.
            if kind is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
                names = "/".join(k.__name__ for k in kinds)
                raise self.fail(f"field {key!r} is {type(value).__name__} {_short(value)}, expected {names}")
            return value
        if required:
            name = " or ".join(repr(k) for k in keys)
            raise self.fail(f"missing field {name} (row has {sorted(self.raw)})")
        return None

    def text(self, *keys: str, required: bool = True) -> str | None:
        value = self.get(*keys, required=required, kind=(str, int, float))
        if value is None:
            return None
        text = str(value).strip()
        if required and not text:
            raise self.fail(f"field {keys[0]!r} is empty")
        return text

    def one_of(self, key: str, allowed: tuple[str, ...]) -> str:
        """The text field `key`, which must be one of `allowed`."""
        value = self.text(key)
        if value not in allowed:
            names = " or ".join(repr(a) for a in allowed)
            raise self.fail(f"field {key!r} = {value!r}, expected {names}")
        return value

    def row_id(self, *keys: str) -> str:
        value = self.get(*keys, required=False, kind=(str, int))
        return str(value) if value is not None else str(self.index)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, str)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_rows(path: str, limit: int = 0) -> list[_Row]:
    """The file's rows (objects), each knowing its "file:line"."""
    if not os.path.isfile(path):
        what = "is a directory, not a JSONL file" if os.path.isdir(path) else "no such file"
        raise BenchmarkError(f"{path}: {what}")
    rows = []
    with open(path, "rb") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                raw = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BenchmarkError(f"{where}: not valid JSON ({e})") from None
            if not isinstance(raw, dict):
                raise BenchmarkError(f"{where}: a row must be a JSON object, got {type(raw).__name__}"
                                     " (the file holds one object per line)")
            rows.append(_Row(raw, where, len(rows)))
            if limit and len(rows) >= limit:
                break
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    return rows


def image_size(path: str, where: str) -> tuple[int, int]:
    """(height, width) of an image file as decode_image will see it (EXIF rotation applied)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the axes
    except FileNotFoundError:
        raise BenchmarkError(f"{where}: image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's ways of saying "not an image"
        raise BenchmarkError(f"{where}: image {path} is unreadable ({type(e).__name__}: {e})") from None
    return (width, height) if rotated else (height, width)


def _image(row: _Row, root: str, *keys: str) -> tuple[str, tuple[int, int]]:
    value = row.get(*keys)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value:
        raise row.fail(f"field {keys[0]!r} must be one image path, got {_short(value)}")
    path = value if os.path.isabs(value) else os.path.join(root, value)
    return path, image_size(path, row.where)


def _groups(**values: Any) -> dict[str, tuple[str, ...]]:
    """Group kind -> values, for the kinds the row has (a list value gives several)."""
    out = {}
    for kind, value in values.items():
        if value is None or value == "" or value == []:
            continue
        items = value if isinstance(value, list) else [value]
        out[kind] = tuple(str(v) for v in items)
    return out


def _options_text(options: Sequence[Any]) -> str:
    return "\n".join(f"({LETTERS[i]}) {option}" for i, option in enumerate(options))


def _letter(row: _Row, answer: str, num_options: int | None = None) -> str:
    letter = parse_choice(answer)
    if letter is None:
        raise row.fail(f"field 'answer' = {answer!r} names no option letter")
    if num_options is not None and LETTERS.index(letter) >= num_options:
        raise row.fail(f"field 'answer' = {answer!r} is past the {num_options} options")
    return letter


# ---- one reader per format --------------------------------------------------------------------

def _mathvista(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    question = row.text("question")
    answer = row.text("answer")
    kind = row.one_of("question_type", ("multi_choice", "free_form"))
    metadata = row.get("metadata", required=False, kind=dict) or {}
    answer_type = row.text("answer_type", required=False)
    path, size = _image(row, root, "image")
    if kind == "multi_choice":
        choices = row.get("choices", kind=list)
        texts = [str(c).strip() for c in choices]
        if len(texts) < 2 or len(texts) > len(LETTERS):
            raise row.fail(f"field 'choices' has {len(texts)} options, expected 2 to {len(LETTERS)}")
        if answer not in texts:
            raise row.fail(f"field 'answer' = {answer!r} is not one of the choices {_short(texts)}")
        gold, scorer = LETTERS[texts.index(answer)], "choice"
        prompt = f"{question}\nChoices:\n{_options_text(texts)}\n{CHOICE_INSTRUCTION}"
    else:
        gold, scorer = answer, "math"
        prompt = question + _free_form_hint(row, answer_type)
    return Item(
        benchmark=name, format="mathvista", index=row.index, id=row.row_id("pid", "id"), where=row.where,
        scorer=scorer, prompt=prompt, image_paths=(path,), image_sizes=(size,), gold=gold, accepted=(gold,),
        groups=_groups(category=metadata.get("category"), task=metadata.get("task"), skill=metadata.get("skills"),
                       question_type=kind),
        record={"question_type": kind, "answer_type": answer_type, "answer_text": answer})


def _free_form_hint(row: _Row, answer_type: str | None) -> str:
    """MathVista's hint of the answer's form (its `query` says the same), minus its answer-at-the-end rule."""
    unit = row.text("unit", required=False)
    hint = f" (Unit: {unit})" if unit else ""
    if answer_type == "integer":
        return hint + "\nAnswer with an integer."
    if answer_type == "float":
        precision = row.get("precision", required=False, kind=(int, float))
        places = f"{int(precision)} decimal place{'s' if int(precision) != 1 else ''}" if precision is not None else \
            "decimals"
        return hint + f"\nAnswer with a number with {places}."
    if answer_type == "list":
        return hint + "\nAnswer with a Python list."
    return hint


def _ocrbench(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    question = row.text("question")
    answers = row.get("answers", "answer", kind=(str, list, int, float))
    values = answers if isinstance(answers, list) else [answers]
    # An answer of only punctuation normalises to nothing: it could never be matched.
    if not values or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool)
                             and normalise_text(str(a)) for a in values):
        raise row.fail(f"field 'answers' must be a string or a list of strings, each with a letter or digit; "
                       f"got {_short(answers)}")
    accepted = tuple(str(a).strip() for a in values)
    path, size = _image(row, root, "image", "image_path")
    return Item(
        benchmark=name, format="ocrbench", index=row.index, id=row.row_id("id", "index"), where=row.where,
        scorer="ocr", prompt=question, image_paths=(path,), image_sizes=(size,), gold=accepted[0], accepted=accepted,
        groups=_groups(type=row.text("type", "question_type", required=False),
                       dataset=row.text("dataset_name", "dataset", required=False)))


def _mmstar(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    question = row.text("question")
    gold = _letter(row, row.text("answer"))
    path, size = _image(row, root, "image")
    return Item(
        benchmark=name, format="mmstar", index=row.index, id=row.row_id("index", "id"), where=row.where,
        scorer="choice", prompt=f"{question}\n{CHOICE_INSTRUCTION}", image_paths=(path,), image_sizes=(size,),
        gold=gold, accepted=(gold,),
        groups=_groups(category=row.text("category", required=False),
                       l2_category=row.text("l2_category", required=False)))


_MMVP_MARKER = re.compile(r"\(([a-z])\)\s*")


def _mmvp(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    question = row.text("question")
    options = row.get("options", kind=(str, list))
    if isinstance(options, str) and _MMVP_MARKER.match(options.strip()):
        # MMVP's "(a) Open (b) Closed": shown as "(A) Open" lines, one option a line and in
        # the capital letters every other multiple-choice benchmark here is asked in.
        options = [o.strip() for o in _MMVP_MARKER.split(options.strip())[2::2]]
    if isinstance(options, list):
        if len(options) < 2 or len(options) > len(LETTERS):
            raise row.fail(f"field 'options' has {len(options)} options, expected 2 to {len(LETTERS)}")
        options_text, count = _options_text([str(o).strip() for o in options]), len(options)
    else:
        options_text, count = options.strip(), None
    gold = _letter(row, row.text("answer", "Correct Answer"), count)
    pair = row.text("pair_id")
    path, size = _image(row, root, "image")
    return Item(
        benchmark=name, format="mmvp", index=row.index, id=row.row_id("index", "id"), where=row.where,
        scorer="choice", prompt=f"{question}\nOptions:\n{options_text}\n{CHOICE_INSTRUCTION}", image_paths=(path,),
        image_sizes=(size,), gold=gold, accepted=(gold,), pair=pair,
        groups=_groups(category=row.text("category", required=False)), record={"pair_id": pair})


def _point(row: _Row, key: str, size: tuple[int, int]) -> tuple[int, int]:
    value = row.get(key, kind=list)
    if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise row.fail(f"field {key!r} must be [row, col], got {_short(value)}")
    r, c = (int(round(v)) for v in value)
    if not (0 <= r < size[0] and 0 <= c < size[1]):
        raise row.fail(f"field {key!r} = [{r}, {c}] lies outside the {size[0]}x{size[1]} image ([row, col])")
    return r, c


def _da2k(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    path, size = _image(row, root, "image")
    points = (_point(row, "point1", size), _point(row, "point2", size))
    closer = row.one_of("closer_point", ("point1", "point2"))
    gold = DA2K_LABELS[0] if closer == "point1" else DA2K_LABELS[1]
    return Item(
        benchmark=name, format="da2k", index=row.index, id=row.row_id("id", "index"), where=row.where,
        scorer="choice", prompt=DA2K_QUESTION, image_paths=(path,), image_sizes=(size,), gold=gold,
        accepted=(gold,), points=points, groups=_groups(category=row.text("category", required=False)),
        record={"point1": list(points[0]), "point2": list(points[1]), "closer_point": closer})


def _jigsaw_task(rows: int, cols: int, opts: ReadOptions) -> jigsaw_lib.ImageJigsaw:
    return jigsaw_lib.ImageJigsaw(rows=rows, cols=cols, seed=opts.seed, container=opts.container, strict=True)


def _jigsaw(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    path, size = _image(row, root, "image")
    given = (row.get("rows", required=False, kind=int), row.get("cols", required=False, kind=int))
    grid = tuple(int(v if v is not None else default) for v, default in zip(given, (opts.jigsaw_rows,
                                                                                    opts.jigsaw_cols)))
    if min(grid) < 1 or grid[0] * grid[1] < 2:
        raise row.fail(f"grid {grid[0]}x{grid[1]}: a jigsaw needs at least 2 pieces")
    side = jigsaw_lib.min_image_side(*grid)
    if min(size) < side:
        raise row.fail(f"image {path} is {size[0]}x{size[1]}, below {side} px for a {grid[0]}x{grid[1]} grid "
                       "(SPEC 1.1: every tile holds a 28 px patch)")
    # The permutation depends only on (seed, index) and the piece count, so the task run on
    # a blank image of the smallest allowed size gives the same target as on the real one.
    blank = np.zeros((side, side, 3), np.uint8)
    gold = _jigsaw_sample(_jigsaw_task(*grid, opts), row.index, [blank], row.where)["solution"]
    return Item(
        benchmark=name, format="jigsaw", index=row.index, id=row.row_id("id", "index"), where=row.where,
        scorer="jigsaw", prompt="", image_paths=(path,), image_sizes=(size,), gold=gold, accepted=(gold,),
        grid=grid, groups=_groups(grid=f"{grid[0]}x{grid[1]}", category=row.text("category", required=False)),
        record={"grid": f"{grid[0]}x{grid[1]}"})


QA_SCORERS = {"choice": "choice", "math": "math", "ocr": "ocr"}  # a qa row's task -> its eval scorer


def _qa(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    prompt = row.text("prompt")
    task = row.text("task")
    if task not in QA_SCORERS:
        raise row.fail(f"field 'task' = {task!r}: a qa benchmark scores tasks {sorted(QA_SCORERS)}")
    value = row.get("images", "image", kind=(list, str))
    found = [_image(_Row({"image": v}, row.where, row.index), root, "image") for v in
             (value if isinstance(value, list) else [value])]
    if not found:
        raise row.fail("field 'images' is empty: a qa benchmark row has at least one image")
    marks = prompt.count("<image>")
    if marks and marks != len(found):
        raise row.fail(f"field 'prompt' has {marks} <image> placeholders for {len(found)} images")
    solution = row.text("solution")
    gold = _letter(row, solution) if task == "choice" else solution
    extra = row.get("groups", required=False, kind=dict) or {}
    return Item(
        benchmark=name, format="qa", index=row.index, id=row.row_id("id", "index"), where=row.where,
        scorer=QA_SCORERS[task], prompt=prompt, image_paths=tuple(p for p, _ in found),
        image_sizes=tuple(s for _, s in found), gold=gold, accepted=(gold,),
        groups=_groups(**{**extra, "task": task, "category": row.text("category", required=False)}))


_MMMU_PLACEHOLDER = re.compile(r"<image (\d+)>")
_MMMU_IMAGE_FIELD = re.compile(r"image_(\d+)")


def _list_field(row: _Row, key: str) -> list:
    """A list field, given as a list or as a string holding a Python / JSON list literal."""
    value = row.get(key, kind=(str, list))
    if isinstance(value, str):
        value = _literal(value)
    if not isinstance(value, list):
        raise row.fail(f"field {key!r} = {_short(row.raw[key])} is not a list (nor a string holding one)")
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        raise row.fail(f"field {key!r} = {_short(row.raw[key])}: every element must be a string or a number")
    return value


def _literal(text: str) -> Any:
    """The value of a Python literal ("['a', 'b']") or JSON text; None when it is neither."""
    for parse in (ast.literal_eval, json.loads):
        try:
            return parse(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return None


def _mmmu_answers(row: _Row) -> tuple[str, ...]:
    """An open question's accepted answers: the answer, or each element of a list (literal)."""
    answer = row.get("answer", kind=(str, int, float, list))
    values = [answer]
    if isinstance(answer, list):
        values = answer
    elif isinstance(answer, str) and answer.strip().startswith("[") and answer.strip().endswith("]"):
        parsed = _literal(answer)
        if isinstance(parsed, list):
            values = parsed
    texts = [str(v).strip() for v in values if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    if not texts or len(texts) != len(values) or not all(texts):
        raise row.fail(f"field 'answer' = {_short(answer)}: expected a non-empty answer or a list of them")
    return tuple(texts)


def _mmmu(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    row_id = row.text("id")
    question = row.text("question")
    kind = row.one_of("question_type", ("multiple-choice", "open"))
    shown = kind == "multiple-choice" or row.raw.get("options") is not None
    options = [str(o).strip() for o in _list_field(row, "options")] if shown else []
    if kind == "multiple-choice":
        if not options or len(options) > len(LETTERS):
            raise row.fail(f"field 'options' has {len(options)} options, expected 1 to {len(LETTERS)}")
        gold = _letter(row, row.text("answer"), len(options))
        accepted, scorer = (gold,), "choice"
    else:
        accepted = _mmmu_answers(row)
        gold, scorer = accepted[0], "math"
    # "<image k>" -> "<image>" at its first appearance (question, then the options shown), the
    # image passed once; a later "<image k>" of the same k reads "(image k)".
    order: dict[int, str] = {}  # k -> the field that first names it, in first-appearance order

    def place(text: str, field: str) -> str:
        def one(match: re.Match) -> str:
            k = int(match.group(1))
            if k in order:
                return f"(image {k})"
            order[k] = field
            return "<image>"
        return _MMMU_PLACEHOLDER.sub(one, text)

    body = place(question, "question")
    if kind == "multiple-choice":
        body += "\n" + _options_text([place(o, "options") for o in options])
    found = []
    for k, field in order.items():
        if row.raw.get(f"image_{k}") is None:
            raise row.fail(f"field {field!r} names <image {k}> but field 'image_{k}' is null or missing")
        found.append(_image(row, root, f"image_{k}"))
    # Images no placeholder names follow, each on a line of its own after the question.
    unnamed = sorted(int(m.group(1)) for key, value in row.raw.items()
                     if value is not None and (m := _MMMU_IMAGE_FIELD.fullmatch(key)) and int(m.group(1)) not in order)
    found += [_image(row, root, f"image_{k}") for k in unnamed]
    body += "".join("\n<image>" for _ in unnamed)
    if not found:
        raise row.fail("no image: every image_<k> field is null or missing")
    if body.count("<image>") != len(found) or "<video>" in body:
        raise row.fail(f"the question or options hold a bare <image> or <video> placeholder: "
                       f"{body.count('<image>')} <image> for {len(found)} images")
    prompt = body + "\n" + (CHOICE_INSTRUCTION if kind == "multiple-choice" else MMMU_OPEN_INSTRUCTION)
    parts = row_id.split("_")
    subject = "_".join(parts[1:-1]) if len(parts) >= 3 else None  # validation_Art_Theory_12 -> Art_Theory
    return Item(
        benchmark=name, format="mmmu", index=row.index, id=row_id, where=row.where, scorer=scorer, prompt=prompt,
        image_paths=tuple(p for p, _ in found), image_sizes=tuple(s for _, s in found), gold=gold, accepted=accepted,
        groups=_groups(subject=subject, subfield=row.text("subfield", required=False),
                       topic_difficulty=row.text("topic_difficulty", required=False), question_type=kind),
        record={"question_type": kind, "answer_text": row.raw.get("answer"), "img_type": row.raw.get("img_type")})


HALLUSION_CATEGORIES = ("VD", "VS")  # visual dependent | visual supplement


def _hallusionbench(row: _Row, name: str, root: str, opts: ReadOptions) -> Item:
    category = row.one_of("category", HALLUSION_CATEGORIES)
    subcategory = row.text("subcategory")
    set_id, figure_id, question_id = (row.text(key) for key in ("set_id", "figure_id", "question_id"))
    question = row.text("question")
    answer = row.get("gt_answer", kind=(str, int))
    if str(answer).strip() not in ("0", "1"):
        raise row.fail(f"field 'gt_answer' = {answer!r}, expected 0 (no) or 1 (yes)")
    gold = "yes" if str(answer).strip() == "1" else "no"
    visual = row.text("visual_input", required=False)
    if visual not in (None, "0", "1", "2"):
        raise row.fail(f"field 'visual_input' = {visual!r}, expected 0 (no figure), 1 or 2")
    # visual_input 0: asked without the figure, whatever filename says; absent: the figure if named.
    with_figure = visual in ("1", "2") or visual is None and row.raw.get("filename") is not None
    found = [_image(row, root, "filename")] if with_figure else []
    key = f"{category}_{subcategory}_{set_id}"
    # The released evaluation leaves VS questions of figure 0 (asked without a figure) out of fAcc.
    figure = None if category == "VS" and figure_id == "0" else f"{key}_{figure_id}"
    return Item(
        benchmark=name, format="hallusionbench", index=row.index, id=f"{key}_{figure_id}_{question_id}",
        where=row.where, scorer="yesno", prompt=f"{question}\n{YESNO_INSTRUCTION}",
        image_paths=tuple(p for p, _ in found), image_sizes=tuple(s for _, s in found), gold=gold, accepted=(gold,),
        pair=f"{key}_{question_id}", figure=figure, groups=_groups(category=category, subcategory=subcategory),
        record={"set_id": set_id, "figure_id": figure_id, "question_id": question_id, "visual_input": visual,
                "gt_answer_details": row.text("gt_answer_details", required=False)})


def _jigsaw_sample(task, index: int, images: list[np.ndarray], where: str) -> dict[str, Any]:
    try:
        return task.map({"id": str(index), "where": where, "images": images, "epoch": 0, "index": index})
    except DataError as e:
        raise BenchmarkError(str(e)) from None


Reader = Callable[[_Row, str, str, ReadOptions], Item]
FORMATS: dict[str, Reader] = {
    "mathvista": _mathvista, "ocrbench": _ocrbench, "mmstar": _mmstar, "mmvp": _mmvp, "da2k": _da2k,
    "jigsaw": _jigsaw, "qa": _qa, "mmmu": _mmmu, "hallusionbench": _hallusionbench,
}


def format_of(name: str) -> str:
    """A benchmark's format: its name, or the part before the first "_" ("mathvista_testmini")."""
    fmt = name if name in FORMATS else name.split("_", 1)[0]
    if fmt not in FORMATS:
        raise BenchmarkError(f"benchmark {name!r}: unknown format; a benchmark's name is its format, or starts with "
                             f"'<format>_', for a format in {sorted(FORMATS)}")
    return fmt


def read_benchmark(name: str, path: str, opts: ReadOptions = ReadOptions()) -> list[Item]:
    """Every row of benchmark file `path` as a checked Item (BenchmarkError on the first bad row).

    The format is `format_of(name)`. Fields per format (a field in brackets is optional):

    mathvista (MathVista testmini, AI4Math/MathVista)
        pid, question, image, answer, question_type ("multi_choice" | "free_form"),
        choices (list, required for multi_choice; `answer` is the text of one of them, as
        released), [answer_type "integer" | "float" | "text" | "list"], [precision], [unit],
        [metadata {category, task, skills: [...], ...}]. Multi-choice rows are scored by
        option letter, free-form rows by math-verify. Groups: category, task, skill.
    ocrbench (OCRBench, echo840/OCRBench)
        question, answer or answers (a string or a list of accepted strings), image or
        image_path, [type or question_type] (the category), [dataset_name or dataset], [id].
        Scored by mmjax's OCR match (SPEC 2.3) against any accepted string. Groups: type, dataset.
    mmstar (MMStar, Lin-Chen/MMStar)
        question (with its "Options: A: ..., B: ..." text), answer (the letter), image,
        [index], [category], [l2_category]. Scored by option letter. Groups: category, l2_category.
    mmvp (MMVP, MMVP/MMVP)
        question, options (a string "(a) Open (b) Closed" or a list), answer ("(a)", "a", "A"),
        image, pair_id, [index], [category]. Each pair_id holds exactly two rows (MMVP's pairs
        are the images 1-2, 3-4, ...); a pair counts only if both are right. Groups: category.
    da2k (DA-2K relative depth, the Visual Jigsaw evaluation)
        image, point1 and point2 ([row, col] pixels, DA-2K's [h, w]), closer_point ("point1" |
        "point2"), [id], [category] (DA-2K's scene type). The points are drawn as SPEC 1.3
        markers labelled A and B; the model names the closer one, scored by option letter.
    jigsaw (image jigsaw solve rate)
        image, [id], [rows], [cols] (default: the options' grid), [category]. The image is cut
        by mmjax's own task (`mmjax.data.jigsaw.ImageJigsaw`, SPEC 1.1) with the permutation of
        record_rng(seed, epoch 0, row index); solved = the exact permutation.
    qa (a held-out split in the training rows' layout, mmjax.data.rows)
        images (a list of paths) or image, prompt (with its <image> placeholders, used as
        written: nothing is appended, so the model sees what training rendered), solution,
        task ("choice": an option letter | "math": math-verify | "ocr": OCR match), [id],
        [category], [groups {kind: value or [values]}]. Groups: task, category, the groups.
    mmmu (MMMU validation, MMMU/MMMU, as JSON lines with image files)
        id ("validation_Accounting_1"), question, options (a list, or a string holding a
        Python / JSON list literal such as "['A1', 'B2']"), answer (multiple-choice: the option
        letter; open: the answer, or a list (literal) of accepted answers), question_type
        ("multiple-choice" | "open"), image_1 ... image_7 (paths, some null), [subfield],
        [topic_difficulty], [img_type]. The prompt is the question, then for multiple-choice
        the options as "(A) ..." lines and CHOICE_INSTRUCTION (open: MMMU_OPEN_INSTRUCTION).
        Each "<image k>" in the question or the shown options becomes an <image> placeholder
        at its first appearance, its image passed there, once; a repeat of the same k reads
        "(image k)". A placeholder naming a null image_k is an error; images no placeholder
        names follow the named ones, each on a line of its own after the question. Scored by
        option letter (multiple-choice) or math-verify against any accepted answer (open).
        Groups: subject (the id between its first and last "_"), subfield, topic_difficulty,
        question_type.
    hallusionbench (HallusionBench.json, tianyi-lab/HallusionBench, as JSON lines)
        category ("VD" | "VS"), subcategory, set_id, figure_id, question_id, question,
        gt_answer (0 / 1 or "0" / "1"; 1 = yes), filename (the figure; may be null when
        visual_input is 0), [visual_input] (0: asked without the figure, which is then not
        passed even if named), [gt_answer_details]. The prompt is the question and
        YESNO_INSTRUCTION; the answer's first word (yes / no) is scored. Metrics as the
        released evaluation: question_accuracy (aAcc, the headline), figure_accuracy (fAcc:
        every question of a (category, subcategory, set_id, figure_id) right; VS questions of
        figure 0, asked without one, are in no figure), pair_accuracy (qAcc: every question of
        a (category, subcategory, set_id, question_id) right). Groups: category, subcategory.
    """
    fmt = format_of(name)
    path = os.fspath(path)
    root = opts.data_root or os.path.dirname(os.path.abspath(path))
    items = [FORMATS[fmt](row, name, root, opts) for row in read_rows(path, opts.limit)]
    if fmt == "mmvp":
        _check_pairs(items, path)
    if fmt == "hallusionbench":
        _check_unique(items, path)
    return items


def _check_unique(items: list[Item], path: str) -> None:
    """HallusionBench: one row per (category, subcategory, set_id, figure_id, question_id)."""
    seen: dict[str, Item] = {}
    for item in items:
        if item.id in seen:
            raise BenchmarkError(f"{item.where}: question {item.id!r} (category_subcategory_set_figure_question) "
                                 f"is also line {seen[item.id].where.rsplit(':', 1)[-1]}")
        seen[item.id] = item


def _check_pairs(items: list[Item], path: str) -> None:
    pairs: dict[str, list[Item]] = {}
    for item in items:
        pairs.setdefault(item.pair, []).append(item)
    for pair, members in pairs.items():
        if len(members) != 2:
            lines = ", ".join(m.where.rsplit(":", 1)[-1] for m in members)
            raise BenchmarkError(f"{path}: pair_id {pair!r} has {len(members)} rows (lines {lines}); an MMVP pair "
                                 "is exactly two questions")


# ---- rendering an item into a task sample -------------------------------------------------------

def render(item: Item, images: list[np.ndarray], opts: ReadOptions, system_prompt: bool = True) -> dict[str, Any]:
    """The sample (`mmjax.data.tasks.make_sample` layout) the processor turns into model inputs."""
    row = {"id": item.id, "where": item.where}
    if item.format == "jigsaw":
        sample = _jigsaw_sample(_jigsaw_task(*item.grid, opts), item.index, images, item.where)
        if sample["solution"] != item.gold:  # the permutation must not depend on the image
            raise BenchmarkError(f"{item.where}: jigsaw target {sample['solution']} differs from the one read "
                                 f"({item.gold})")
        return sample
    if item.format == "da2k":
        images = [draw_markers(images[0], item.points, DA2K_LABELS)]
    messages = prompts.qa_messages(None, item.prompt, len(images), 0, opts.container, system_prompt)
    return make_sample(row, task=item.format, messages=messages, images=images, solution=item.gold,
                       container=opts.container)
