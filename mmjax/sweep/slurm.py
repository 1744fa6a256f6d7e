"""`--emit slurm`: the sweep as Slurm batch scripts, so a cluster's scheduler runs the grid.

We write no scheduler. W/slurm/<name>.sbatch runs the run's `mmjax.main` command line, the
same one the local runner starts, and records its end in the run's state file
(mmjax.sweep.state), so a later `python -m mmjax.sweep` on a shared filesystem knows what is
done. W/slurm/submit.sh submits them in dependency order, each with
`--dependency=afterok:<the jobs of the runs it needs>` (`sbatch --parsable` gives the ids) and
`--kill-on-invalid-dep=yes`: when a run fails, the jobs that need it are cancelled instead of
pending forever, as the local runner skips them. Runs already done are not submitted again.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence

from mmjax.sweep.plan import Planned

SUBMIT = "submit.sh"


def script(p: Planned, sweep: str, cwd: str, python: str = sys.executable) -> str:
    """The batch script of run `p` of the sweep `sweep` (the --config value)."""
    q = shlex.quote
    record = [python, "-m", "mmjax.sweep.state", p.workdir, "$rc"]
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name={p.name}",
        f"#SBATCH --output={p.log}",
        "#SBATCH --open-mode=append",
        f"# Run {p.name} of the sweep {sweep} (python -m mmjax.sweep --emit slurm); "
        f"after: {', '.join(p.needs) or 'nothing'}.",
        "# submit.sh submits it with --dependency=afterok on the jobs of the runs it needs. Add the",
        "# #SBATCH lines your cluster needs (partition, nodes, GPUs, time) here or on sbatch's command line.",
        "# A multi-host run keeps its own launch: srun starts one process per task (#SBATCH --ntasks),",
        "# and mmjax.main joins them with jax.distributed.initialize(), which reads Slurm's environment.",
        "# Exit status 75: stopped on a signal after saving (preempted); submitting it again resumes the run.",
        "set -uo pipefail",
        f"cd {q(cwd)} || exit 1",
        f"srun {shlex.join(p.command)}",
        "rc=$?",
        " ".join([*map(q, record[:-1]), record[-1], shlex.join(p.command)]),
        "exit $rc",
        "",
    ])


def submit_script(planned: Sequence[Planned], done: Callable[[str], bool]) -> str:
    """submit.sh: `sbatch --parsable` each run not done, after the jobs of the runs it needs."""
    lines = [
        "#!/bin/bash",
        "# Submits the sweep's runs to Slurm in dependency order (python -m mmjax.sweep --emit slurm):",
        "# each job starts only once the jobs of the runs it needs succeeded (--dependency=afterok);",
        "# when one fails, the jobs that need it are cancelled (--kill-on-invalid-dep=yes).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    job: dict[str, str] = {}
    for k, p in enumerate(planned, 1):
        if done(p.name):
            lines.append(f"# {p.name}: already done ({p.workdir}/sweep_state.json), not submitted")
            continue
        job[p.name] = f"job{k}"
        after = [f"${job[d]}" for d in p.needs if d in job]  # a dependency not submitted here is done
        dependency = f" --dependency=afterok:{':'.join(after)} --kill-on-invalid-dep=yes" if after else ""
        lines += [f"job{k}=$(sbatch --parsable{dependency} {shlex.quote(p.name + '.sbatch')})",
                  f"job{k}=${{job{k}%%;*}}  # --parsable prints <id> or <id>;<cluster>",
                  f'echo "{p.name}: job $job{k}"']
    return "\n".join(lines) + "\n"


def emit(planned: Sequence[Planned], workdir: str, sweep: str, done: Callable[[str], bool]) -> list[str]:
    """Write W/slurm/<name>.sbatch for every run and W/slurm/submit.sh; the paths written."""
    out = os.path.join(os.path.abspath(workdir), "slurm")
    os.makedirs(out, exist_ok=True)
    paths = []
    for p in planned:
        os.makedirs(p.workdir, exist_ok=True)  # Slurm opens --output there and creates no folder
        paths.append(_write(os.path.join(out, f"{p.name}.sbatch"), script(p, sweep, os.getcwd())))
    paths.append(_write(os.path.join(out, SUBMIT), submit_script(planned, done)))
    return paths


def _write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path
