"""Adaptive jigsaw difficulty (issue 23 section 3): the controller, puzzles per level, resume, the pipeline."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from mmjax.data import batching, depth_jigsaw, jigsaw, pipeline, synthetic, video_jigsaw
from mmjax.data.adaptive_jigsaw import (LEVELS, AdaptiveConfig, AdaptiveJigsaw, LevelState, next_state,
                                        piece_counts)
from mmjax.data.skips import SkipCounter
from mmjax.processing import tiny_tokenizer

IMAGE = "jigsaw_image"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def shapes_row():
    """A loaded 112 x 112 row: 112 = 28 * 4, the smallest side a 4x4 grid takes (SPEC 1.1)."""
    row = synthetic.ShapesVqaSource(1, size=(112, 112), background="plain")[0]
    return {**row, "epoch": 0, "index": 0}


def _image_levels(tok, seed: int = 0):
    """make_transforms for the image jigsaw: the task transform at the grid, then ProcessSample."""
    process = batching.ProcessSample(tok)
    return lambda grid: [jigsaw.ImageJigsaw(rows=grid[0], cols=grid[1], seed=seed), process]


def _steps(solved_per_group, num_generations: int, task: str = IMAGE) -> dict:
    """One step's rows: group i solved solved_per_group[i] of its G rollouts (first ones)."""
    exact = [[1.0] * s + [0.0] * (num_generations - s) for s in solved_per_group]
    count = len(solved_per_group)
    return {"index": np.arange(count), "epoch": np.zeros(count, int), "task": np.asarray([task] * count, object),
            "rewards": 1.2 * np.asarray(exact).reshape(-1), "fn/jigsaw_exact": np.asarray(exact).reshape(-1)}


def _controller(**overrides) -> AdaptiveJigsaw:
    config = AdaptiveConfig(enabled=True, **{"start_level": 0, **overrides})
    return AdaptiveJigsaw(config, IMAGE, make_transforms=lambda value: [])


# ---- the controller on scripted solve rates ---------------------------------------------------------------

def test_moves_up_down_and_waits_for_min_groups():
    adaptive = _controller(ema_decay=0.5, min_groups=4)
    script = [  # (groups' solves of G = 4, level after, rate after), by hand
        ([4, 4], 0, 1.0),        # first step at a level sets the rate; 2 groups < min_groups: stays
        ([4, 2], 1, math.nan),   # 0.5 * 1 + 0.5 * 0.75 = 0.875 > 0.7 after 4 groups: up; the rate restarts
        ([0, 0], 1, 0.0),        # 0 < 0.3, but 2 groups at the new level < 4: stays
        ([2, 2], 0, math.nan),   # 0.5 * 0 + 0.5 * 0.5 = 0.25 < 0.3 after 4 groups: down
        ([2, 1], 0, 0.375),      # 3 / 8
        ([2, 2], 0, 0.4375),     # 0.5 * 0.375 + 0.5 * 0.5: in the band after 4 groups: stays
    ]
    for step, (solved, level, rate) in enumerate(script):
        adaptive.observe(_steps(solved, 4), num_generations=4, step=step)
        assert adaptive.level == level, step
        np.testing.assert_equal(adaptive.rate, rate, err_msg=f"step {step}")
    assert adaptive.metrics()["jigsaw/jigsaw_image/moves"] == 2


def test_band_edges_and_bounds_hold_the_level():
    at_edge = _controller(ema_decay=0.0, min_groups=1)
    at_edge.observe(_steps([7, 7], 10), num_generations=10, step=0)  # exactly target_hi: not above it
    assert at_edge.level == 0 and at_edge.rate == 0.7
    at_edge.observe(_steps([3, 3], 10), num_generations=10, step=1)  # exactly target_lo: not below it
    assert at_edge.level == 0

    floor = _controller(ema_decay=0.0, min_groups=2)
    for step in range(3):  # always failing at the lowest rung: stays there and keeps counting
        floor.observe(_steps([0, 0], 4), num_generations=4, step=step)
    assert floor.level == 0 and floor.metrics()["jigsaw/jigsaw_image/groups_at_level"] == 6

    capped = _controller(ema_decay=0.0, min_groups=1, start_level=1, max_level=2)
    levels = []
    for step in range(4):
        capped.observe(_steps([4], 4), num_generations=4, step=step)
        levels.append(capped.level)
    assert levels == [2, 2, 2, 2]  # one rung per step, never past max_level
    assert capped.value == (3, 3) and capped.pieces == 9


def test_only_this_tasks_groups_count_and_threshold_without_exact_column():
    adaptive = _controller(ema_decay=0.0, min_groups=1)
    rows = _steps([0, 4], 4)
    rows["task"] = np.asarray([IMAGE, "qa"], object)  # the solved group is another task's
    adaptive.observe(rows, num_generations=4, step=0)
    assert adaptive.rate == 0.0 and adaptive.level == 0

    adaptive = _controller(ema_decay=0.0, min_groups=1, start_level=2)
    rows = {"rewards": np.asarray([1.2, 1.0, 0.39, 0.0])}  # no task column: the run's one task; 0.39: partial
    adaptive.observe(rows, num_generations=4, step=0)
    assert adaptive.rate == 0.5 and adaptive.level == 2

    untouched = _controller()
    untouched.observe(_steps([4], 4, task="qa"), num_generations=4, step=0)  # no group of this task
    assert math.isnan(untouched.rate) and untouched.metrics()["jigsaw/jigsaw_image/groups_at_level"] == 0


def _run(config: AdaptiveConfig, rate_at_level, steps: int) -> list[int]:
    """The level after each step of 2 groups x 4 rollouts, solving rate_at_level[level] x 4 of each."""
    adaptive = AdaptiveJigsaw(config, IMAGE, make_transforms=lambda value: [])
    levels = []
    for step in range(steps):
        solved = int(rate_at_level[adaptive.level] * 4)
        adaptive.observe(_steps([solved, solved], 4), num_generations=4, step=step)
        levels.append(adaptive.level)
    return levels


def test_promotion_backoff_damps_the_flip_flop_and_a_promotion_that_holds_resets_it():
    # 2x2 always solved, 2x3 never: without backoff the level flips every step (as measured in the README).
    flip = dict(start_level=0, min_groups=2, ema_decay=0.0)
    assert _run(AdaptiveConfig(**flip), {0: 1.0, 1: 0.0}, 10) == [1, 0] * 5
    # Backoff 2: after the k-th failed promotion in a row, 2 x 2^k groups at 2x2 before trying again.
    levels = _run(AdaptiveConfig(**flip, promotion_backoff=2.0), {0: 1.0, 1: 0.0}, 16)
    assert levels == [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    # 2x3 in the band (0.5) holds min_groups groups: the promotion held, the backoff resets, and a later
    # promotion from 2x3 waits only min_groups.
    config = AdaptiveConfig(**flip, promotion_backoff=2.0)
    state = LevelState(level=1, retreats=3, came_up=True)
    state = next_state(state, observed=0.5, groups=2, step=0, config=config)
    assert (state.level, state.retreats, state.came_up) == (1, 0, False)
    state = next_state(dataclasses.replace(state, groups=0), observed=1.0, groups=2, step=1, config=config)
    assert (state.level, state.retreats, state.came_up) == (2, 0, True)
    # A fall back from a level reached by moving down is no failed promotion.
    state = next_state(LevelState(level=2), observed=0.0, groups=2, step=0, config=config)
    assert (state.level, state.retreats) == (1, 0)
    with pytest.raises(ValueError, match=r"promotion_backoff=0.5 must be a number in \[1, 16\]"):
        AdaptiveConfig(promotion_backoff=0.5)


def test_next_state_is_pure():
    config = AdaptiveConfig(start_level=0, min_groups=1, ema_decay=0.0)
    before = LevelState(level=1)
    after = next_state(before, observed=1.0, groups=3, step=5, config=config)
    assert before == LevelState(level=1) and after == LevelState(level=2, moves=1, last_step=5, came_up=True)


def test_metrics_name_the_task_and_the_piece_count():
    adaptive = AdaptiveJigsaw(AdaptiveConfig(), "jigsaw_3d", make_transforms=lambda value: [], fixed_value=6)
    metrics = adaptive.metrics(lambda counts: [counts])
    assert metrics["jigsaw/jigsaw_3d/difficulty"] == 6.0 and metrics["jigsaw/jigsaw_3d/level"] == 2.0
    assert math.isnan(metrics["jigsaw/jigsaw_3d/solve_rate"])
    assert piece_counts(IMAGE) == (4, 6, 9, 12, 16)
    assert piece_counts("jigsaw_video") == piece_counts("jigsaw_3d") == (4, 5, 6, 7, 8)


# ---- checkpoints -------------------------------------------------------------------------------------------

def test_state_round_trip_continues_like_an_unbroken_run():
    rng = np.random.default_rng(0)
    stream = [rng.integers(0, 5, size=3).tolist() for _ in range(30)]
    unbroken = _controller(ema_decay=0.7, min_groups=5, start_level=2)
    first = _controller(ema_decay=0.7, min_groups=5, start_level=2)
    trajectory = []
    for step, solved in enumerate(stream):
        unbroken.observe(_steps(solved, 4), num_generations=4, step=step)
        trajectory.append(unbroken.get_state())
    for step, solved in enumerate(stream[:13]):
        first.observe(_steps(solved, 4), num_generations=4, step=step)
    resumed = _controller(ema_decay=0.7, min_groups=5, start_level=2)
    resumed.set_state(json.loads(json.dumps(first.get_state())))
    assert resumed.get_state() == trajectory[12]
    for step, solved in enumerate(stream[13:], start=13):
        resumed.observe(_steps(solved, 4), num_generations=4, step=step)
        assert resumed.get_state() == trajectory[step], step
    assert len({s["controller"]["level"] for s in trajectory}) > 1  # the stream does move the level


def test_set_state_refuses_another_task_or_a_level_out_of_bounds():
    state = _controller(start_level=4).get_state()
    with pytest.raises(ValueError, match="outside \\[min_level, max_level\\]"):
        _controller(max_level=3).set_state(state)
    with pytest.raises(ValueError, match="for task 'jigsaw_image'"):
        AdaptiveJigsaw(AdaptiveConfig(start_level=0), "jigsaw_video", lambda value: []).set_state(state)


# ---- config ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"target_lo": 0.8}, "target_lo=0.8"),
    ({"target_hi": 1.5}, "target_hi=1.5"),
    ({"ema_decay": 1.0}, "ema_decay=1.0"),
    ({"min_groups": 0}, "min_groups=0"),
    ({"max_level": 5}, "max_level=5"),
    ({"min_level": 3, "max_level": 2}, "min_level=3"),
    ({"start_level": 4, "max_level": 3}, "start_level=4"),
    ({"start_level": 1.5}, "start_level=1.5"),
    ({"solved_threshold": float("nan")}, "solved_threshold=nan"),
    ({"enabled": "yes"}, "enabled='yes'"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"^(.*; )?{field.replace('.', '[.]')}"):
        AdaptiveConfig(**overrides)


def test_every_config_field_has_help():
    assert all(f.metadata.get("help") for f in dataclasses.fields(AdaptiveConfig))


def test_start_level_minus_one_needs_the_recipe_size_on_the_ladder():
    config = AdaptiveConfig()
    assert AdaptiveJigsaw(config, IMAGE, lambda value: [], fixed_value=(3, 3)).level == 2
    with pytest.raises(ValueError, match="start_level=-1: .*\\(5, 5\\) is not on the ladder"):
        AdaptiveJigsaw(config, IMAGE, lambda value: [], fixed_value=(5, 5))
    with pytest.raises(ValueError, match="start_level=-1: .*outside \\[min_level, max_level\\]"):
        AdaptiveJigsaw(AdaptiveConfig(max_level=1), "jigsaw_video", lambda value: [], fixed_value=6)
    with pytest.raises(ValueError, match="task 'qa' has no difficulty ladder"):
        AdaptiveJigsaw(config, "qa", lambda value: [])


# ---- puzzles per level -------------------------------------------------------------------------------------

def test_image_puzzles_have_the_levels_piece_count_and_repeat(tok, shapes_row):
    made = []
    make = _image_levels(tok)

    def counting(grid):
        made.append(grid)
        return make(grid)

    for level, (grid, pieces) in enumerate(zip(LEVELS[IMAGE], piece_counts(IMAGE))):
        adaptive = AdaptiveJigsaw(AdaptiveConfig(start_level=level), IMAGE, counting)
        sample = adaptive.apply(shapes_row)
        again = adaptive.apply(shapes_row)
        assert len(sample["inputs"]["image_grid_thw"]) == pieces, grid
        target = [int(t) for t in sample["meta"]["solution"].split(",")]
        assert sorted(target) == list(range(1, pieces + 1))
        assert again["meta"] == sample["meta"]  # the same record gives the same puzzle
        np.testing.assert_array_equal(again["inputs"]["input_ids"], sample["inputs"]["input_ids"])
        np.testing.assert_array_equal(again["inputs"]["pixel_values"], sample["inputs"]["pixel_values"])
    assert made == list(LEVELS[IMAGE])  # each level's transforms built once


def test_video_and_depth_puzzles_have_the_levels_piece_count(long_video):
    video_row = {"id": "v", "videos": [long_video], "images": [], "epoch": 0, "index": 3}
    rgbd_row = {**synthetic.SyntheticRgbdSource(1)[0], "epoch": 1, "index": 0}
    for level in (0, 4):
        video = AdaptiveJigsaw.from_task_transform(AdaptiveConfig(start_level=level), "jigsaw_video",
                                                   video_jigsaw.VideoJigsaw(frame_pixels=56 * 56))
        sample = video.apply(video_row)
        assert len(sample["videos"]) == video.pieces == (4, 8)[level // 4]
        assert sorted(int(t) for t in sample["solution"].split(",")) == list(range(1, video.pieces + 1))
        assert video.apply(video_row)["solution"] == sample["solution"]

        depth = AdaptiveJigsaw.from_task_transform(AdaptiveConfig(start_level=level), "jigsaw_3d",
                                                   depth_jigsaw.DepthJigsaw())
        sample = depth.apply(rgbd_row)
        assert len(sample["points"]) == depth.pieces == (4, 8)[level // 4]
        assert len(sample["solution"].split(",")) == depth.pieces
        np.testing.assert_array_equal(depth.apply(rgbd_row)["images"][0], sample["images"][0])


def test_a_level_that_skips_a_record_counts_it_and_passes_it_over(tok):
    small = {**synthetic.ShapesVqaSource(1, size=(84, 84))[0], "epoch": 0, "index": 0}  # 84 < 28 * 4
    counter = SkipCounter()
    adaptive = AdaptiveJigsaw(AdaptiveConfig(start_level=4), IMAGE, _image_levels(tok), counter=counter)
    assert adaptive.apply(small) is None
    assert counter.counts == {"image_too_small": 1}
    assert adaptive.get_state()["skipped"] == {"image_too_small": 1}
    broken = AdaptiveJigsaw(AdaptiveConfig(start_level=0), IMAGE, lambda grid: [lambda row: 1 / 0])
    assert broken.apply(small) is None and broken.get_state()["skipped"] == {"transform_error": 1}


def test_prompt_lengths_per_level(tok, shapes_row):
    adaptive = AdaptiveJigsaw(AdaptiveConfig(start_level=0), IMAGE, _image_levels(tok))
    lengths = adaptive.prompt_lengths(shapes_row)
    assert sorted(lengths) == [0, 1, 2, 3, 4] and all(isinstance(n, int) for n in lengths.values())
    assert lengths[4] > lengths[0]


# ---- inside the real pipeline ------------------------------------------------------------------------------

def _pieces_of(element) -> int:
    return len(element["meta"]["solution"].split(","))


def _observe_drawn(adaptive, drawn, solved: bool, step: int, num_generations: int = 2) -> None:
    count = len(drawn)
    exact = np.full(count * num_generations, float(solved))
    # What the GRPO objective gives: record keys and rewards, no task column (a run has one task).
    adaptive.observe({"index": np.asarray([e["meta"]["index"] for e in drawn]),
                      "epoch": np.asarray([e["meta"]["epoch"] for e in drawn]),
                      "rewards": 1.2 * exact, "fn/jigsaw_exact": exact}, num_generations=num_generations, step=step)


def test_pipeline_moves_the_level_and_resumes_the_same_sequence(tok):
    source = synthetic.ShapesVqaSource(5, size=(112, 112), background="plain")
    config = pipeline.PipelineConfig(seed=3, batch_size=2, process_index=0, process_count=1, read_threads=1)
    adaptive_config = AdaptiveConfig(enabled=True, ema_decay=0.0, min_groups=2)

    def build():
        counter = SkipCounter()
        adaptive = AdaptiveJigsaw.from_task_transform(
            adaptive_config, IMAGE, jigsaw.ImageJigsaw(rows=2, cols=2, seed=3), then=[batching.ProcessSample(tok)],
            counter=counter)
        return adaptive, pipeline.build_dataset(source, [], config, counter=counter, feedback=adaptive)

    adaptive, dataset = build()
    iterator = iter(dataset)
    drawn = [next(iterator) for _ in range(2)]
    assert [_pieces_of(e) for e in drawn] == [4, 4]
    _observe_drawn(adaptive, drawn, solved=True, step=0)
    assert adaptive.level == 1
    drawn = [next(iterator) for _ in range(2)]
    assert [_pieces_of(e) for e in drawn] == [6, 6]
    assert [len(e["inputs"]["image_grid_thw"]) for e in drawn] == [6, 6]

    state = json.loads(json.dumps(iterator.get_state()))

    def continue_run(adaptive, iterator):
        seen = []
        for step, solved in ((1, True), (2, False), (3, False)):
            drawn = [next(iterator) for _ in range(2)]
            seen += [(e["meta"]["id"], e["meta"]["epoch"], e["meta"]["solution"]) for e in drawn]
            _observe_drawn(adaptive, drawn, solved=solved, step=step)
        seen.append(adaptive.get_state())
        return seen

    expected = continue_run(adaptive, iterator)
    assert [len(s.split(",")) for _, _, s in expected[:-1]] == [6, 6, 9, 9, 6, 6]  # up at step 1, down at 2
    fresh, dataset = build()
    restored = iter(dataset)
    restored.set_state(state)
    assert fresh.level == 1
    assert continue_run(fresh, restored) == expected
