"""Adaptive jigsaw difficulty (issue 23 section 3): the running solve rate moves the puzzle size.

Visual Jigsaw (SPEC 1) fixes the size per task: a 3x3 grid, 6 clips, 6 depth points. As the
policy learns, a fixed size becomes too easy (every group solved: no GRPO gradient) or stays
too hard. `AdaptiveJigsaw` holds ONE task's level on a ladder of sizes (`LEVELS`) and moves it
one rung at a time to keep the task's solve rate inside a target band:

  jigsaw_image  grid (2, 2) -> (2, 3) -> (3, 3) -> (3, 4) -> (4, 4)   (rows, cols)
  jigsaw_video  4 -> 5 -> 6 -> 7 -> 8 clips
  jigsaw_3d     4 -> 5 -> 6 -> 7 -> 8 depth points

Sources: PuzzleCraft (arXiv 2512.14944) trains jigsaw puzzles along a size curriculum;
balanced online filtering (arXiv 2504.03380) keeps the pass rate in a band, where the
binary reward's variance p(1 - p), hence GRPO's signal, is large.

Solve = the exact permutation (the top tier of SPEC 1.5's reward): the rollout's
`fn/jigsaw_exact` column (`mmjax.rewards.jigsaw.jigsaw_exact`, 0/1; give it weight 0 to log
it without changing the reward) when the reward has it, else total reward >=
`solved_threshold`.

The controller (`observe`, once per step, with every process's rows, so all processes agree):
  observed   = solved rollouts / all rollouts of this task's groups in the step
  rate      <- observed at a level's first observed step, else
               ema_decay * rate + (1 - ema_decay) * observed
  after at least `min_groups` groups at the current level:
    rate < target_lo and level > min_level: one rung down;
    rate > target_hi and level < max_level, after min_groups x promotion_backoff ** retreats
    groups: one rung up;
  a move restarts the rate and the group count (the old level's rate says little about
  the new one). The level is per task, never per sample; the state is a few numbers, so a
  step's move is a pure function of the state and the step's rows.

  retreats counts the promotions that failed in a row: a level reached by moving up that
  falls back before it held min_groups groups. A promotion that holds resets it. With
  promotion_backoff 2, each failed promotion doubles the groups the level below must see
  before trying again (exponential backoff, as in retry logic), so a model that is not
  ready for the next rung stops flip-flopping (issue 23's measured run: 42-50 moves in 128
  steps with no backoff, the 2x3 level solving nothing each time), while one that improves
  still climbs. Default 1: no backoff, the controller the README's table measured.

Where it runs: in the main process, as the pipeline's `feedback` stage
(`mmjax.data.feedback`), so each record is built at the level current when a batch draws
it. So the task transform and `ProcessSample` run here, not in the workers; the workers
only load rows (`LoadRow`: file reads and decoding). The caller passes no transforms to
`build_dataset` and gives the level's transforms through `make_transforms`:

    counter = SkipCounter()
    adaptive = AdaptiveJigsaw.from_task_transform(
        AdaptiveConfig(enabled=True), "jigsaw_image", ImageJigsaw(rows=3, cols=3, seed=0),
        then=[ProcessSample(tok)], counter=counter)
    dataset = pipeline.build_dataset(source, [], pipe, batch_fn=batcher, counter=counter,
                                     feedback=adaptive)
    ...   # after each GRPO step:
    adaptive.observe(rows, num_generations=16, step=step)
    adaptive.metrics(gather)  # jigsaw/jigsaw_image/{difficulty,solve_rate,level,groups_at_level,moves,retreats}

Skips: `FeedbackStage` sits after `DropSkipped`, so a `Skipped` returned by `apply` would
reach the batcher. A level's transform that skips a record (an image too small for the
grid, a prompt over max_prompt_length) is recorded in the skip counter (the pipeline's, when
the caller shares it as above: its counts are then part of the iterator state and of the
skip log) and `apply` returns None: the record is passed over. A transform that raises is
turned into a skip by `pipeline.GuardedMap`, as in the workers (strict mode raises).

Shapes: each level is its own prompt length, so its own prompt-length bucket. With
`data.bucket_lengths = ()` (`mmjax.processing.buckets`' rule) every length has a bucket, and
while the source's images share one size (each level then has one prompt length and one
vision patch count) a run compiles at most one more prompt and vision shape per level it
visits. An explicit `data.bucket_lengths` must reach the longest prompt of
`max_level`: `prompt_lengths(row)` measures each level's tokens for a row. An upper bound per
level, for K = `piece_counts(task)[level]`: image K * (max_pixels / 784 + 2) vision tokens
(each tile is its own image, capped at max_pixels, plus its start and end tokens), video
K * (frames per clip / 2) * frame_pixels / 784 (+ 2 per clip), 3D one image whatever K
(only the marker count and the text change), plus the text. The image tiles partition one
image, so in practice the image levels differ by the per-tile rounding to 28 px and the
per-tile text, not by K times the image.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mmjax.config_help import choice_errors, help_text
from mmjax.data.pipeline import GuardedMap
from mmjax.data.skips import SkipCounter, Skipped

# The ladder of each task, easiest first: image (rows, cols) grids, video clips, 3D points.
LEVELS: dict[str, tuple[Any, ...]] = {
    "jigsaw_image": ((2, 2), (2, 3), (3, 3), (3, 4), (4, 4)),
    "jigsaw_video": (4, 5, 6, 7, 8),
    "jigsaw_3d": (4, 5, 6, 7, 8),
}
NUM_LEVELS = 5
assert all(len(ladder) == NUM_LEVELS for ladder in LEVELS.values())  # one config fits every task
# The sample's "task" tag (what the rollout rows carry) of each recipe task (config.data.task).
SAMPLE_TASKS = {"jigsaw_image": "jigsaw_image", "jigsaw_video": "jigsaw_video", "jigsaw_3d": "jigsaw_depth"}
# The task transform's size fields (ImageJigsaw, VideoJigsaw, DepthJigsaw) a level sets.
SIZE_FIELDS = {"jigsaw_image": ("rows", "cols"), "jigsaw_video": ("num_clips",), "jigsaw_3d": ("num_points",)}
EXACT_COLUMN = "fn/jigsaw_exact"  # mmjax.rewards.jigsaw.jigsaw_exact: 1.0 = the exact permutation
STATE_VERSION = 1


def _field(default: Any, text: str, choices=None):
    return dataclasses.field(default=default, metadata=help_text(text, choices=choices))


@dataclasses.dataclass(frozen=True)
class AdaptiveConfig:
    """How a jigsaw task's size follows its solve rate (`config.data.adaptive`)."""

    enabled: bool = _field(False, "move the jigsaw size with the solve rate (issue 23 section 3; PuzzleCraft, arXiv "
                                  "2512.14944, trains jigsaws along a size curriculum); False = the recipe's fixed "
                                  "size (SPEC 1)", (False, True))
    target_lo: float = _field(0.3, "one rung down when the running solve rate falls below this; balanced online "
                                   "filtering (arXiv 2504.03380) keeps intermediate pass rates: in [0.3, 0.7] "
                                   "p(1-p) >= 0.21, 84% of its maximum; the band is wide so that the drop in solve "
                                   "rate one rung up causes can land inside it, rather than flip the level back "
                                   "(mmjax)")
    target_hi: float = _field(0.7, "one rung up when the running solve rate rises above this (see target_lo)")
    start_level: int = _field(-1, "index into the task's ladder (jigsaw_image (2,2) (2,3) (3,3) (3,4) (4,4); "
                                  "jigsaw_video 4-8 clips; jigsaw_3d 4-8 points) to start at; -1 = the recipe's "
                                  "fixed size (data.jigsaw_rows/cols, video_clips, jigsaw_points), which must be on "
                                  "the ladder (SPEC 1 defaults 3x3, 6, 6 are index 2)")
    min_level: int = _field(0, "lowest ladder index the level may reach (issue 23: 2x2, 4 clips, 4 points)")
    max_level: int = _field(NUM_LEVELS - 1, "highest ladder index the level may reach (issue 23: 4x4, 8 clips, "
                                            "8 points); images must be >= 28 * max(rows, cols) px at it "
                                            "(SPEC 1.1), or they are skipped")
    ema_decay: float = _field(0.8, "running solve rate per step: rate <- decay * rate + (1 - decay) * the step's "
                                   "rate, in [0, 1); 0.8 averages over about 5 steps; a move restarts it at the "
                                   "new level's first step (mmjax)")
    min_groups: int = _field(32, "groups (prompts) observed at the current level before it may move, >= 1, so one "
                                 "lucky step does not move it; 32 prompts put the standard error of a rate near "
                                 "0.5 at about 0.09, under half the band's width (mmjax)")
    promotion_backoff: float = _field(1.0, "after a failed promotion (a level reached by moving up that falls back "
                                           "before holding min_groups groups), the groups needed before moving up "
                                           "again multiply by this, per failed promotion in a row; >= 1; 1 = no "
                                           "backoff (as measured in the README); 2 doubles the wait each time "
                                           "(hysteresis against 2x2 <-> 2x3 flip-flopping; mmjax, issue 23)")
    solved_threshold: float = _field(1.0, "without an fn/jigsaw_exact reward column, a rollout solves its puzzle "
                                          "when its total reward >= this; 1.0 separates SPEC 1.5's exact "
                                          "permutation (1.2) from partial credit (<= 0.4); the code preset's "
                                          "-0.5 repetition penalty can push a solve below it, so log "
                                          "jigsaw_exact (weight 0) instead")

    def __post_init__(self):
        errors = choice_errors(self) + _range_errors(self)
        if errors:
            raise ValueError("; ".join(errors))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _range_errors(c: AdaptiveConfig) -> list[str]:
    """One message per field outside its range, each naming the field."""
    top = NUM_LEVELS - 1
    numbers = {name: _is_number(getattr(c, name)) for name in ("target_lo", "target_hi", "ema_decay",
                                                                "solved_threshold", "promotion_backoff")}
    ints = {name: _is_int(getattr(c, name)) for name in ("start_level", "min_level", "max_level", "min_groups")}
    bounds_ok = ints["min_level"] and ints["max_level"]
    band_ok = numbers["target_lo"] and numbers["target_hi"]
    checks = [
        ("target_lo", band_ok and 0.0 <= c.target_lo < c.target_hi, "a number in [0, target_hi)"),
        ("target_hi", band_ok and c.target_lo < c.target_hi <= 1.0, "a number in (target_lo, 1]"),
        ("min_level", bounds_ok and 0 <= c.min_level <= c.max_level, "an integer in [0, max_level]"),
        ("max_level", bounds_ok and c.min_level <= c.max_level <= top, f"an integer in [min_level, {top}]"),
        ("start_level", ints["start_level"] and (c.start_level == -1 or (
            bounds_ok and c.min_level <= c.start_level <= c.max_level)), "-1 or an integer in [min_level, max_level]"),
        ("ema_decay", numbers["ema_decay"] and 0.0 <= c.ema_decay < 1.0, "a number in [0, 1)"),
        ("min_groups", ints["min_groups"] and c.min_groups >= 1, "an integer >= 1"),
        ("promotion_backoff", numbers["promotion_backoff"] and 1.0 <= c.promotion_backoff <= 16.0,
         "a number in [1, 16]"),
        ("solved_threshold", numbers["solved_threshold"] and math.isfinite(c.solved_threshold), "a finite number"),
    ]
    return [f"{name}={getattr(c, name)!r} must be {rule}" for name, ok, rule in checks if not ok]


def check_task(task: str) -> str:
    if task not in LEVELS:
        raise ValueError(f"adaptive jigsaw: task {task!r} has no difficulty ladder; expected one of {sorted(LEVELS)}")
    return task


def piece_counts(task: str) -> tuple[int, ...]:
    """The number of pieces of each level of `task`: rows * cols tiles, clips or points."""
    return tuple(_pieces(value) for value in LEVELS[check_task(task)])


def _pieces(value: Any) -> int:
    return int(np.prod(value))


def size_of(task: str, transform: Any) -> Any:
    """The ladder value of a task transform's own size: (rows, cols) for the image, else the count."""
    values = tuple(int(getattr(transform, name)) for name in SIZE_FIELDS[check_task(task)])
    return values if len(values) > 1 else values[0]


def at_size(task: str, transform: Any, value: Any) -> Any:
    """A copy of the (frozen dataclass) task transform with its size set to ladder value `value`."""
    values = value if isinstance(value, tuple) else (value,)
    return dataclasses.replace(transform, **dict(zip(SIZE_FIELDS[check_task(task)], values)))


def start_index(config: AdaptiveConfig, task: str, fixed_value: Any = None) -> int:
    """The level the run starts at: `config.start_level`, or the recipe's own size's rung for -1."""
    if config.start_level != -1:
        return config.start_level
    ladder = LEVELS[check_task(task)]
    if fixed_value not in ladder:
        raise ValueError(f"start_level=-1: the recipe's {task} size {fixed_value!r} is not on the ladder "
                         f"{list(ladder)}; set start_level to an index")
    index = ladder.index(fixed_value)
    if not config.min_level <= index <= config.max_level:
        raise ValueError(f"start_level=-1: the recipe's {task} size {fixed_value!r} (index {index}) lies outside "
                         f"[min_level, max_level] = [{config.min_level}, {config.max_level}]")
    return index


def solved_rollouts(rows: Mapping[str, Any], num_generations: int, config: AdaptiveConfig) -> np.ndarray:
    """bool [P, G]: which rollouts solved their puzzle (module docstring: the exact column, else the threshold)."""
    if num_generations < 1:
        raise ValueError(f"num_generations={num_generations} must be >= 1")
    column = EXACT_COLUMN if EXACT_COLUMN in rows else "rewards"
    values = np.asarray(rows[column], np.float64).reshape(-1)
    if values.size % num_generations:
        raise ValueError(f"rows[{column!r}] has {values.size} values, not a multiple of num_generations "
                         f"{num_generations} (prompt-major [P * G])")
    threshold = 0.5 if column == EXACT_COLUMN else config.solved_threshold  # the exact column is 0 or 1
    return (values >= threshold).reshape(-1, num_generations)


def task_groups(rows: Mapping[str, Any], num_prompts: int, task: str) -> np.ndarray:
    """bool [P]: the prompts of `task` (rows["task"], if given, holds sample tags; without it every prompt is)."""
    if "task" not in rows:
        return np.ones(num_prompts, bool)  # the recipe has one task (feedback.Feedback.observe): all are this one
    tags = np.asarray(rows["task"], dtype=object).reshape(-1)
    if tags.size != num_prompts:
        raise ValueError(f"rows['task'] has {tags.size} prompts; the rewards have {num_prompts} groups")
    return np.isin(tags, [task, SAMPLE_TASKS[task]])


@dataclasses.dataclass
class LevelState:
    """One task's controller state: the level and what was observed at it."""

    level: int
    rate: float = math.nan   # running solve rate at this level; NaN = not observed yet
    groups: int = 0          # groups observed at this level
    moves: int = 0           # level changes so far
    last_step: int = -1      # the last step observed (-1 = none)
    retreats: int = 0        # failed promotions in a row (module docstring)
    came_up: bool = False    # this level was reached by a promotion that has not yet held min_groups groups


def next_state(state: LevelState, observed: float, groups: int, step: int, config: AdaptiveConfig) -> LevelState:
    """The state after a step whose `groups` groups of this task solved a fraction `observed` of their rollouts."""
    if groups == 0:
        return dataclasses.replace(state, last_step=step)  # no evidence: nothing moves
    rate = observed if math.isnan(state.rate) else config.ema_decay * state.rate + (1 - config.ema_decay) * observed
    new = dataclasses.replace(state, rate=rate, groups=state.groups + groups, last_step=step)
    if new.groups < config.min_groups:
        return new
    if rate < config.target_lo and new.level > config.min_level:
        return LevelState(level=new.level - 1, moves=new.moves + 1, last_step=step,
                          retreats=new.retreats + 1 if new.came_up else new.retreats)
    if new.came_up:  # the promotion held min_groups groups without falling back
        new = dataclasses.replace(new, retreats=0, came_up=False)
    wait = config.min_groups * config.promotion_backoff ** new.retreats
    if rate > config.target_hi and new.level < config.max_level and new.groups >= wait:
        return LevelState(level=new.level + 1, moves=new.moves + 1, last_step=step, retreats=new.retreats,
                          came_up=True)
    return new


class AdaptiveJigsaw:
    """The `Feedback` stage of one jigsaw task: builds each record at the task's current level.

    Args:
      config: see `AdaptiveConfig`.
      task: the recipe task (`LEVELS`' keys: jigsaw_image, jigsaw_video, jigsaw_3d).
      make_transforms: ladder value -> the transforms that turn a loaded row into the sample at
        that size, in order (the task transform at that size, then `ProcessSample`); called once
        per level, lazily.
      fixed_value: the recipe's own size (for `start_level=-1`), e.g. (3, 3), 6.
      counter: where skipped records are counted; share the pipeline's (module docstring).
      strict: raise instead of skipping a record a transform fails on (`pipeline.GuardedMap`).
    """

    def __init__(self, config: AdaptiveConfig, task: str, make_transforms: Callable[[Any], Sequence[Any]],
                 fixed_value: Any = None, counter: SkipCounter | None = None, strict: bool = False):
        self.config, self.task = config, check_task(task)
        self.ladder = LEVELS[task]
        self._make_transforms, self._strict = make_transforms, strict
        self._counter = counter if counter is not None else SkipCounter()
        self._start = start_index(config, task, fixed_value)
        self._state = LevelState(level=self._start)
        self._cache: dict[int, list[GuardedMap]] = {}

    @classmethod
    def from_task_transform(cls, config: AdaptiveConfig, task: str, transform: Any, then: Sequence[Any] = (),
                            counter: SkipCounter | None = None, strict: bool = False) -> AdaptiveJigsaw:
        """From the recipe's task transform (ImageJigsaw / VideoJigsaw / DepthJigsaw) and what follows it:
        each level runs `at_size(task, transform, value)` then `then`; the transform's size is the start."""
        then = list(then)
        return cls(config, task, lambda value: [at_size(task, transform, value), *then],
                   fixed_value=size_of(task, transform), counter=counter, strict=strict)

    # ---- what the state says ------------------------------------------------------------------

    @property
    def level(self) -> int:
        return self._state.level

    @property
    def value(self) -> Any:
        """The current level's ladder value: (rows, cols), clips or points."""
        return self.ladder[self._state.level]

    @property
    def pieces(self) -> int:
        return _pieces(self.value)

    @property
    def rate(self) -> float:
        return self._state.rate

    # ---- the pipeline stage, in the main process ------------------------------------------------

    def transforms_at(self, level: int) -> list[GuardedMap]:
        """The level's transforms (built once), each guarded so that an exception becomes a skip."""
        if level not in self._cache:
            made = self._make_transforms(self.ladder[level])
            self._cache[level] = [GuardedMap(t, self._strict) for t in made]
        return self._cache[level]

    def build(self, element: Any, level: int) -> Any:
        """The record at `level`: a processed sample, or the `Skipped` a transform returned."""
        for transform in self.transforms_at(level):
            if isinstance(element, Skipped):
                break
            element = transform.map(element)
        return element

    def apply(self, element: dict[str, Any]) -> dict[str, Any] | None:
        """The loaded row built at the current level; None (counted as a skip) when a transform skipped it."""
        sample = self.build(element, self._state.level)
        if isinstance(sample, Skipped):
            self._counter.record(sample)  # after DropSkipped: count it here, never pass it on to the batch
            return None
        return sample

    def prompt_lengths(self, row: dict[str, Any]) -> dict[int, int | None]:
        """Prompt tokens of `row` at each level in [min_level, max_level] (None: skipped), to choose
        `data.bucket_lengths`; needs `make_transforms` to end with ProcessSample. Counts no skips."""
        lengths = {}
        for level in range(self.config.min_level, self.config.max_level + 1):
            sample = self.build(row, level)
            lengths[level] = None if isinstance(sample, Skipped) else len(sample["inputs"]["input_ids"])
        return lengths

    # ---- the objective's side, after each step ----------------------------------------------------

    def observe(self, rows: Mapping[str, Any], num_generations: int, step: int) -> None:
        """Folds one step's rollouts (every process's, in process order) into the solve rate; may move the
        level one rung. A run has one task, so the objective gives no task column and every group counts;
        given rows["task"], groups of other tasks are ignored. Assumes the step's prompts were drawn at the
        current level: the trainer draws a step's batches, then observes them, before the next draw."""
        solved = solved_rollouts(rows, num_generations, self.config)
        mine = task_groups(rows, solved.shape[0], self.task)
        groups = int(mine.sum())
        observed = float(solved[mine].mean()) if groups else math.nan
        self._state = next_state(self._state, observed, groups, int(step), self.config)

    def metrics(self, gather: Callable[[dict], list[dict]] | None = None) -> dict[str, float]:
        """jigsaw/<task>/difficulty (pieces), /solve_rate (running; NaN before the level's first step),
        /level (ladder index), /groups_at_level, /moves, /retreats (failed promotions in a row). All of it
        is the state, which `observe` keeps the same on every process, so nothing goes through `gather`
        (the protocol's argument)."""
        del gather
        prefix = f"jigsaw/{self.task}"
        return {f"{prefix}/difficulty": float(self.pieces), f"{prefix}/solve_rate": float(self._state.rate),
                f"{prefix}/level": float(self._state.level), f"{prefix}/groups_at_level": float(self._state.groups),
                f"{prefix}/moves": float(self._state.moves), f"{prefix}/retreats": float(self._state.retreats)}

    # ---- checkpoints: part of the data iterator's state -----------------------------------------

    def get_state(self) -> dict[str, Any]:
        """JSON-able (NaN as None; floats keep their exact repr through JSON)."""
        state = dataclasses.asdict(self._state)
        state["rate"] = None if math.isnan(self._state.rate) else self._state.rate
        return {"version": STATE_VERSION, "task": self.task, "controller": state,
                "skipped": self._counter.counts}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"adaptive jigsaw state version {state.get('version')!r}; this mmjax reads "
                             f"{STATE_VERSION}")
        if state.get("task") != self.task:
            raise ValueError(f"the checkpoint's adaptive jigsaw state is for task {state.get('task')!r}, this run's "
                             f"is {self.task!r} (config.data.task changed since it was written?)")
        saved = dict(state["controller"])
        level = int(saved["level"])
        if not self.config.min_level <= level <= self.config.max_level:
            raise ValueError(f"the checkpoint's adaptive jigsaw level {level} lies outside [min_level, max_level] = "
                             f"[{self.config.min_level}, {self.config.max_level}] (config.data.adaptive "
                             f"changed since it was written?)")
        saved["rate"] = math.nan if saved["rate"] is None else float(saved["rate"])
        self._state = LevelState(level=level, rate=saved["rate"], groups=int(saved["groups"]),
                                 moves=int(saved["moves"]), last_step=int(saved["last_step"]),
                                 retreats=int(saved.get("retreats", 0)), came_up=bool(saved.get("came_up", False)))
        # A shared counter already got these counts from DropSkipped's state, saved at the same moment.
        self._counter.set_counts(state["skipped"])
