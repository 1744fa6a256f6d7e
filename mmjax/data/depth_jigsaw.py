"""3D jigsaw (SPEC 1.3): order numbered points on an RGB-D frame from near to far."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mmjax.data import prompts
from mmjax.data.jigsaw import format_order, shuffle_pieces
from mmjax.data.markers import draw_markers
from mmjax.data.skips import Skipped
from mmjax.data.tasks import TaskTransform, make_sample


def pick_depth_points(depth: np.ndarray, num_points: int, rng: np.random.Generator, *,
                      min_depth: float = 0.1, max_depth: float = 10.0,
                      min_distance: float = 40.0, min_depth_gap: float = 0.2, margin: int = 15,
                      restarts: int = 8, max_candidates: int = 20000) -> np.ndarray | None:
    """Picks (row, col) points sorted near to far, or None if the constraints fail.

    Every point has depth in [min_depth, max_depth] and lies `margin` px inside
    the border; every pair is >= `min_distance` px apart with a depth gap >
    `min_depth_gap`. Greedy over a random candidate order (at most
    `max_candidates` pixels): take the next candidate, drop every remaining one
    that conflicts with it; `restarts` fresh orders.
    """
    height, width = depth.shape
    valid = (depth >= min_depth) & (depth <= max_depth)
    inner = np.zeros_like(valid)
    inner[margin:height - margin, margin:width - margin] = True
    rows, cols = np.nonzero(valid & inner)
    if len(rows) < num_points:
        return None
    coords = np.stack([rows, cols], axis=1).astype(np.float64)
    values = depth[rows, cols].astype(np.float64)
    for _ in range(restarts):
        remaining = rng.permutation(len(coords))[:max_candidates]
        chosen = []
        while len(chosen) < num_points and remaining.size:
            pick, remaining = remaining[0], remaining[1:]
            chosen.append(pick)
            far = np.linalg.norm(coords[remaining] - coords[pick], axis=1) >= min_distance
            distinct = np.abs(values[remaining] - values[pick]) > min_depth_gap
            remaining = remaining[far & distinct]
        if len(chosen) == num_points:
            chosen = np.asarray(chosen)
            chosen = chosen[np.argsort(values[chosen], kind="stable")]
            return coords[chosen].astype(np.int64)
    return None


@dataclasses.dataclass(frozen=True)
class DepthJigsaw(TaskTransform):
    """SPEC 1.3 on rows with `images=[rgb]` and `depth` (metres), e.g. from RgbdSource.

    Marker j+1 is drawn at the canonical (near-to-far) point order[j]; the target
    lists, nearest first, each point's marker number.
    """

    num_points: int = 6
    min_depth: float = 0.1
    max_depth: float = 10.0
    min_distance: float = 40.0
    min_depth_gap: float = 0.2
    radius: int = 15
    alpha: int = 120

    def apply(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any] | Skipped:
        if "depth" not in row or len(row.get("images", ())) != 1:
            return self.skip(row, "depth_jigsaw_needs_rgbd", "row needs one image and a depth map")
        points = pick_depth_points(row["depth"], self.num_points, rng, min_depth=self.min_depth,
                                   max_depth=self.max_depth, min_distance=self.min_distance,
                                   min_depth_gap=self.min_depth_gap, margin=self.radius)
        if points is None:
            return self.skip(row, "depth_points_unsatisfiable",
                             f"cannot place {self.num_points} points >= {self.min_distance} px apart"
                             f" with depth gaps > {self.min_depth_gap} m")
        order, target = shuffle_pieces(self.num_points, rng)
        image = draw_markers(row["images"][0], [tuple(points[j]) for j in order],
                             [str(j + 1) for j in range(self.num_points)], self.radius, self.alpha)
        content = prompts.depth_jigsaw_content(self.num_points, self.container)
        sample = make_sample(row, task="jigsaw_depth", messages=[prompts.user_message(content)],
                             images=[image], solution=format_order(target), container=self.container)
        sample["points"] = points  # near to far, for inspection and tests
        return sample
