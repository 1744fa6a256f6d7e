"""Test helper: `python -m mmjax.main ARGS...` in this process, with one hook for the test.

tests/rl/test_multiprocess.py launches it once per process (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID in the environment, as a launcher would set them;
mmjax.main joins the processes with jax.distributed.initialize).

MMJAX_TEST_SLOW_STEPS=seconds: sleep that long after each step's checkpoint call, so a
preemption notice sent to one process reaches the others (JAX's preemption service polls for
it about once a second) before the run would end by itself.
"""

import os
import runpy
import sys
import time

_SLOW_STEPS = os.environ.get("MMJAX_TEST_SLOW_STEPS")


def _slow_steps(seconds: float) -> None:
    from mmjax.train import checkpoints

    save = checkpoints.TrainCheckpointer.save

    def save_then_sleep(self, *args, **kwargs):
        saved = save(self, *args, **kwargs)
        time.sleep(seconds)
        return saved

    checkpoints.TrainCheckpointer.save = save_then_sleep


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # configs/
    if _SLOW_STEPS:
        _slow_steps(float(_SLOW_STEPS))
    sys.argv = ["mmjax.main", *sys.argv[1:]]
    runpy.run_module("mmjax.main", run_name="__main__", alter_sys=True)
