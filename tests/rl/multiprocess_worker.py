"""Test helper: `python -m mmjax.main ARGS...` in this process, with one hook for the test.

tests/rl/test_multiprocess.py launches it once per process (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID in the environment, as a launcher would set them;
mmjax.main joins the processes with jax.distributed.initialize).

MMJAX_TEST_PAUSE_AFTER_STEP=k and MMJAX_TEST_PAUSE_DIR=dir: once the checkpoint of step k is
completely written (Orbax finalized it), write dir/paused.<process index> and sleep, so the
test can SIGKILL every process at the same known point of the run.
"""

import os
import runpy
import sys
import time

_PAUSE_AFTER = os.environ.get("MMJAX_TEST_PAUSE_AFTER_STEP")


def _pause_after_saving(step_to_pause: int, marker_dir: str) -> None:
    from mmjax.train import checkpoints

    save = checkpoints.TrainCheckpointer.save

    def save_then_pause(self, step, *args, **kwargs):
        saved = save(self, step, *args, **kwargs)
        if step == step_to_pause:
            import jax
            self.wait()  # every process's shards written and the checkpoint finalized
            with open(os.path.join(marker_dir, f"paused.{jax.process_index()}"), "w") as f:
                f.write(str(step))
            time.sleep(3600)  # the test kills us here
        return saved

    checkpoints.TrainCheckpointer.save = save_then_pause


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # configs/
    if _PAUSE_AFTER:
        _pause_after_saving(int(_PAUSE_AFTER), os.environ["MMJAX_TEST_PAUSE_DIR"])
    sys.argv = ["mmjax.main", *sys.argv[1:]]
    runpy.run_module("mmjax.main", run_name="__main__", alter_sys=True)
