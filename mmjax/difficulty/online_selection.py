"""Online difficulty selection as a pipeline stage (`mmjax.data.feedback.Feedback`): the rows' pass
rates follow the GRPO rollouts, and the policy decides which records the next steps draw.

Rows are the records of the source the pipeline reads (after the offline selection, so online
selection works on top of a score file's levels): `meta["index"]`. Each step the GRPO
objective gives `observe` every process's prompts and rewards; the state and the step's
counts are part of the data iterator's state, so a resumed run draws what an unbroken one did.
Several processes: every process holds the same state (the objective gathers every process's
rows), and each fills its own batches from its shard of the record stream; once records are
passed over, the processes' accepted rows side by side are not the rows one process would
accept from the whole stream (each shard is filtered on its own): another sample of the same
policy, not the same one.

    selection = OnlineSelection(OnlineConfig(policy="band"), num_rows=len(source), seed=0)
    dataset = pipeline.build_dataset(source, transforms, pipe, batch_fn, feedback=selection)
    ...
    selection.observe({"index": ..., "rewards": ..., "fn/accuracy": ...}, num_generations=8, step=3)
    selection.metrics(sharding.allgather_json)    # online/levels/..., online/retired, online/retried, ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmjax.difficulty import online_policy, online_state
from mmjax.difficulty.online_state import OnlineConfig

_STEP_COUNTS = ("drawn", "passed_over", "retried", "pass_rate_sum")


class OnlineSelection:
    """The online state of `num_rows` rows and its policy, for one run (seeds: `online_state.init`)."""

    def __init__(self, config: OnlineConfig, num_rows: int, seed: int, seed_pass_rates=None, seed_levels=None):
        self.config, self.seed = config, int(seed)
        self.state = online_state.init(num_rows, config, seed_pass_rates, seed_levels)
        self._counts = dict.fromkeys(_STEP_COUNTS, 0.0)

    # ---- the pipeline stage, in the main process --------------------------------------------

    def apply(self, element: dict[str, Any]) -> dict[str, Any] | None:
        key = element.get("meta", element)  # a processed sample's meta, or a loaded row
        index, epoch = int(key["index"]), int(key.get("epoch", 0))
        if not online_policy.accepts(self.state, self.config, seed=self.seed, epoch=epoch, index=index):
            self._counts["passed_over"] += 1
            if self.config.retry_probability == 0 and self.state.retired.all():
                raise RuntimeError(f"config.data.online: every one of the {self.state.num_rows} rows is retired "
                                   f"(outside the band [{self.config.band_lo}, {self.config.band_hi}]) and "
                                   "retry_probability=0: nothing is left to draw; widen the band or allow re-tries")
            return None
        self._counts["drawn"] += 1
        self._counts["retried"] += int(self.state.retired[index])
        self._counts["pass_rate_sum"] += float(online_state.estimates(self.state, self.config)[index])
        return element

    # ---- the objective's side, after each step -------------------------------------------------

    def observe(self, rows: dict[str, np.ndarray], num_generations: int, step: int) -> None:
        column = f"fn/{self.config.solved_reward}" if self.config.solved_reward else "rewards"
        if column not in rows:
            raise KeyError(f"config.data.online.solved_reward={self.config.solved_reward!r}: the reward has no "
                           f"function of that name (it has {sorted(k[3:] for k in rows if k.startswith('fn/'))})")
        self.state = online_state.update(self.state, rows["index"], rows[column], num_generations, step, self.config)

    def metrics(self, gather=lambda counts: [counts]) -> dict[str, float]:
        """The rows' levels now, the retired rows, and this step's draws over every process (`gather`:
        each process's counts), which are then counted afresh."""
        c = {k: sum(part[k] for part in gather(dict(self._counts))) for k in _STEP_COUNTS}
        out = {f"online/levels/{name}": float(n)
               for name, n in online_state.level_counts(self.state, self.config).items()}
        out.update({"online/retired": float(self.state.retired.sum()), "online/retried": c["retried"],
                    "online/drawn": c["drawn"], "online/passed_over": c["passed_over"],
                    "online/mean_pass_rate_drawn": c["pass_rate_sum"] / c["drawn"] if c["drawn"] else float("nan")})
        out.update({f"online/{name}": float(getattr(self.state, name))
                    for name in ("retired_total", "retried_total", "returned_total")})
        self._counts = dict.fromkeys(_STEP_COUNTS, 0.0)
        return out

    # ---- checkpoints: part of the data iterator's state -------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {"state": online_state.to_dict(self.state), "counts": dict(self._counts)}

    def set_state(self, state: dict[str, Any]) -> None:
        restored = online_state.from_dict(state["state"])
        if restored.num_rows != self.state.num_rows:
            raise ValueError(f"the checkpoint's online state has {restored.num_rows} rows; this run's data has "
                             f"{self.state.num_rows} (config.data changed since it was written?)")
        self.state, self._counts = restored, {k: float(v) for k, v in state["counts"].items()}
