"""Grounding accuracy (SPEC 2.3): greedy per-label matching, area-weighted IoU.

Boxes come from ``boxes.parse_boxes`` (answer = container content, else the whole
completion). Labels are used only when every target and every predicted box has one;
otherwise all boxes form one group (bare ``[x1, y1, x2, y2]`` lists, single-object
referring expressions).

Within each label, the (target, prediction) pair with the highest IoU is matched first,
then the next highest among unmatched boxes, and so on (pairs with IoU 0 never match;
ties go to the lower target then prediction index). Then::

    reward = sum over matched targets g of area(g) * IoU(g, match(g)) / denominator

with ``denominator="all"`` (default): the area of all target boxes, so a missed box
costs its area share; ``"matched"``: the area of matched targets only (released code,
where missing a box costs nothing). Extra predictions cost nothing in either. The
released code matches targets one by one in input order and uses the +1 pixel area
convention; mmjax's matching does not depend on box order and uses continuous areas.
Range [0, 1].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mmjax.rewards import parsing, registry
from mmjax.rewards.boxes import Box, boxes_from_object, iou, parse_boxes

DENOMINATORS = ("all", "matched")


def match_boxes(targets: Sequence[Box], preds: Sequence[Box]) -> dict[int, tuple[int, float]]:
    """Greedy highest-IoU-first matching within labels: target index -> (pred index, IoU)."""
    use_labels = all(b.label is not None for b in (*targets, *preds))
    groups: dict[Any, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for gi, box in enumerate(targets):
        groups[box.label if use_labels else None][0].append(gi)
    for pi, box in enumerate(preds):
        groups[box.label if use_labels else None][1].append(pi)
    matches: dict[int, tuple[int, float]] = {}
    for target_ids, pred_ids in groups.values():
        pairs = [(iou(targets[g], preds[p]), g, p) for g in target_ids for p in pred_ids]
        pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
        used_preds: set[int] = set()
        for overlap, g, p in pairs:
            if overlap <= 0.0:
                break
            if g in matches or p in used_preds:
                continue
            matches[g] = (p, overlap)
            used_preds.add(p)
    return matches


def weighted_iou(targets: Sequence[Box], preds: Sequence[Box], denominator: str = "all") -> float:
    """Area-weighted IoU of the matching (see module doc)."""
    matches = match_boxes(targets, preds)
    numerator = sum(targets[g].area * overlap for g, (_, overlap) in matches.items())
    weights = targets if denominator == "all" else [targets[g] for g in matches]
    total = sum(b.area for b in weights)
    return 0.0 if total <= 0 else min(1.0, numerator / total)


def target_boxes(target: Any, container: str) -> list[Box]:
    """Target boxes from parsed data (list of dicts / boxes) or text; none raises BadTarget."""
    found = parse_boxes(parsing.answer_or_text(target, container)) if isinstance(target, str) else boxes_from_object(target)
    if not found:
        raise registry.BadTarget(f"no valid box in grounding target {str(target)[:120]!r}")
    return found


def grounding_score(text: str, target: Any, *, container: str = parsing.ANSWER, denominator: str = "all") -> float:
    gold = target_boxes(target, container)
    return weighted_iou(gold, parse_boxes(parsing.answer_or_text(text, container)), denominator)


@registry.register("accuracy_grounding")
def grounding_reward(
    completions: Sequence[str],
    targets: Sequence[Any],
    *,
    container: str = parsing.ANSWER,
    denominator: str = "all",
    **kwargs: Any,
) -> list[float]:
    """Range [0, 1]; targets are boxes (Qwen2.5-VL dict list, bare boxes, or their text)."""
    parsing.check_container(container)
    if denominator not in DENOMINATORS:
        raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")
    return registry.score_rows(
        "accuracy_grounding",
        lambda text, target: grounding_score(text, target, container=container, denominator=denominator),
        completions, targets)
