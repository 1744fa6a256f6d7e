"""The recipe tests/rl/test_multiprocess.py runs: the demo's GRPO job, FSDP over 8 devices.

mesh fsdp=8 spans both processes of the 2 x 4-device run, so every process holds (and
checkpoints) its own half of each parameter, and the batch splits over all 8 devices.
Adam's eps = 1 makes the update linear in the gradient at this model's gradient sizes: the
rounding-level differences between one process and two (other reduction orders) then stay
at rounding level, where Adam's default eps would blow a 1e-9 gradient up to a full step.
"""

from configs import demo


def get_config(arg: str | None = None):
    c = demo.get_config()
    c.mode = "grpo"
    c.save_steps = 1
    c.grpo.num_generations = 4
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
    c.optim.eps = 1.0
    c.optim.learning_rate = 0.05  # with eps = 1 the step is lr * gradient: make the params move
    c.data.online.policy = "band"  # the online state from both processes' rows (issue 23)
    return c
