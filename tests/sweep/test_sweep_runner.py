"""The sweep runner with a fake job (no JAX): dependency order, a failure skipping exactly its
dependents, resuming a sweep, exit 75, --only, --dry_run, --emit slurm, overrides checked
before anything runs, and the sweep command line's own --config.<key>=<value> overrides
(mmjax.sweep.cli.sweep, mmjax.sweep.runner). The recipes are real
(configs/demo.py), loaded and checked as mmjax.main does; nothing is compiled."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time


from mmjax.sweep import check, cli, runner, state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "configs", "demo.py")

# a <- b <- c <- g, a <- d, e, (b, e) <- f: b failing must skip c, f and g, and only them.
GRAPH = """[
    Run("a", {"max_steps": 2}),
    Run("b", {"init_from": "{a}"}),
    Run("c", {"init_from": "{b}"}),
    Run("d", {"optim.learning_rate": 1e-3}, after="a"),
    Run("e"),
    Run("f", after=("b", "e")),
    Run("g", {"init_from": "{c}"}),
]"""


def _sweep_file(tmp_path, runs: str, name="sweep.py") -> str:
    path = tmp_path / name
    path.write_text(f"from mmjax.sweep import Run\n\n\ndef get_config(arg=None):\n"
                    f"    import runpy\n    return runpy.run_path({DEMO!r})['get_config'](arg)\n\n\n"
                    f"def get_sweep(arg=None):\n    return {runs}\n")
    return str(path)


class FakeJob:
    """launch(command, log_path) -> rc: records which runs started; `rcs` gives a run's exit status."""

    def __init__(self, **rcs):
        self.rcs, self.started, self.commands = rcs, [], {}

    def __call__(self, command, log_path):
        name = os.path.basename(command[command.index("--workdir") + 1])
        self.started.append(name)
        self.commands[name] = list(command)
        with open(log_path, "a") as f:
            f.write(shlex.join(command) + "\n")
        return self.rcs.get(name, 0)


def _sweep(config, workdir, launch=None, **kw):
    lines = []
    code = cli.sweep(config, str(workdir), launch=launch, out=lines.append, **kw)
    return code, "\n".join(lines)


def _states(workdir):
    return {name: (state.read(os.path.join(workdir, "runs", name)) or {}).get("state")
            for name in sorted(os.listdir(os.path.join(workdir, "runs")))}


def test_a_failing_run_skips_exactly_its_dependents_and_a_rerun_skips_what_is_done(tmp_path, capsys):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob(b=1)
    code, table = _sweep(config, w, job)
    assert code == 1
    assert job.started == ["a", "b", "d", "e"]  # dependency order; c, f, g never start
    assert _states(w) == {"a": "done", "b": "failed", "d": "done", "e": "done"}
    rows = dict(line.split(None, 1) for line in table.splitlines()[1:-1])
    assert rows["a"] == "done in 0 s" and rows["b"].startswith("failed (rc 1)")
    assert rows["c"] == "skipped (because b failed)" and rows["f"] == "skipped (because b failed)"
    assert rows["g"] == "skipped (because c was skipped)"
    progress = capsys.readouterr().out
    assert "[2/7] b: started" in progress and "[2/7] b: failed (rc 1)" in progress

    saved = json.load(open(w / "runs" / "a" / "sweep_state.json"))
    assert saved["state"] == "done" and saved["rc"] == 0 and saved["command"][1:4] == ["-m", "mmjax.main", "--config"]
    assert (w / "runs" / "a" / "log.txt").read_text().startswith(shlex.join(saved["command"]))

    job = FakeJob()  # b works now: the done runs are skipped, the rest run
    code, table = _sweep(config, w, job)
    assert code == 0 and job.started == ["b", "c", "f", "g"]
    rows = dict(line.split(None, 1) for line in table.splitlines()[1:-1])
    assert rows["a"] == rows["d"] == rows["e"] == "already done"
    job = FakeJob()
    assert _sweep(config, w, job)[0] == 0 and job.started == []


def test_exit_75_stops_the_sweep_and_a_rerun_continues(tmp_path):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob(d=state.PREEMPTED)
    code, table = _sweep(config, w, job)
    assert code == 75 and job.started == ["a", "b", "c", "d"]  # e, f, g: not started
    assert _states(w) == {"a": "done", "b": "done", "c": "done", "d": "stopped"}
    rows = dict(line.split(None, 1) for line in table.splitlines()[1:-2])
    assert rows["d"] == "stopped (rc 75) in 0 s: run the sweep again to resume it"
    assert [rows[n] for n in "efg"] == ["not started"] * 3 and "run the same command again" in table
    job = FakeJob()
    assert _sweep(config, w, job)[0] == 0 and job.started == ["d", "e", "f", "g"]


def test_the_preempted_exit_status_is_the_trainers():
    from mmjax.train.preemption import PREEMPTED_EXIT_CODE
    assert state.PREEMPTED == PREEMPTED_EXIT_CODE


def test_only_runs_the_matching_runs_and_needs_their_dependencies_done(tmp_path, capsys):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    assert _sweep(config, w, job, only="b")[0] == 2 and job.started == []
    assert "run b depends on a, which --only b leaves out and which is not done" in capsys.readouterr().err
    assert _sweep(config, w, job, only="a,e")[0] == 0 and job.started == ["a", "e"]
    job = FakeJob()
    assert _sweep(config, w, job, only="[bd]")[0] == 0 and job.started == ["b", "d"]
    assert _sweep(config, w, job, only="nothing*")[0] == 2
    assert "--only nothing* matches no run" in capsys.readouterr().err


def test_dry_run_prints_each_command_and_its_dependencies(tmp_path):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    code, out = _sweep(config, w, job, dry_run=True)
    assert code == 0 and job.started == [] and not os.path.exists(w)
    lines = out.splitlines()
    heads, commands = lines[0::2], [shlex.split(line) for line in lines[1::2]]
    assert heads[1] == "# [2/7] b: after a" and heads[5] == "# [6/7] f: after b, e" and heads[0].endswith("nothing")
    assert commands[1] == [sys.executable, "-m", "mmjax.main", "--config", config, "--workdir",
                           str(w / "runs" / "b"), f"--config.init_from={w}/runs/a"]
    assert commands[3][-1] == "--config.optim.learning_rate=0.001"


def test_emit_slurm_writes_scripts_chained_with_afterok(tmp_path):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    assert _sweep(config, w, job, only="a")[0] == 0  # a done: not submitted again, nothing waits on it
    code, out = _sweep(config, w, job, emit="slurm")
    assert code == 0 and job.started == ["a"] and "submit.sh" in out
    slurm = w / "slurm"
    assert sorted(os.listdir(slurm)) == sorted([f"{n}.sbatch" for n in "abcdefg"] + ["submit.sh"])
    for name in os.listdir(slurm):
        subprocess.run(["bash", "-n", str(slurm / name)], check=True)
    script = (slurm / "b.sbatch").read_text()
    assert "#SBATCH --job-name=b" in script and "jax.distributed" in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[1:] == [sys.executable, "-m", "mmjax.main", "--config", config, "--workdir",
                                     str(w / "runs" / "b"), f"--config.init_from={w}/runs/a"]

    # submit.sh with a fake sbatch that prints job ids 101, 102, ... and records its arguments
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text('#!/bin/bash\nn=$(( $(wc -l < "$LOG" 2>/dev/null || echo 0) + 101 ))\n'
                                 'echo "$*" >> "$LOG"\necho "$n;cluster"\n')
    (bin_ / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "LOG": str(tmp_path / "sbatch.log")}
    subprocess.run(["bash", str(slurm / "submit.sh")], check=True, env=env, capture_output=True)
    calls = (tmp_path / "sbatch.log").read_text().splitlines()
    ids = {c.split()[-1][:-len(".sbatch")]: 101 + i for i, c in enumerate(calls)}
    assert list(ids) == ["b", "c", "d", "e", "f", "g"]
    deps = {c.split()[-1][:-len(".sbatch")]: [a for a in c.split() if a.startswith("--dependency")] for c in calls}
    assert deps == {"b": [], "c": [f"--dependency=afterok:{ids['b']}"], "d": [], "e": [],
                    "f": [f"--dependency=afterok:{ids['b']}:{ids['e']}"], "g": [f"--dependency=afterok:{ids['c']}"]}


def test_a_mistyped_override_is_named_before_any_run_starts(tmp_path, capsys):
    config = _sweep_file(tmp_path, '[Run("a"), Run("b", {"grpo.num_generaitons": 4, "init_from": "{a}"})]')
    job = FakeJob()
    assert _sweep(config, tmp_path / "w", job)[0] == 2
    assert job.started == [] and not os.path.exists(tmp_path / "w")
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmjax.sweep: error: run b: --config.grpo.num_generaitons: ")
    assert "did you mean config.grpo.num_generations" in err and len(err.splitlines()) == 1
    config = _sweep_file(tmp_path, '[Run("a", {"max_steps": "ten"}), Run("b", config="nope.py")]', "s2.py")
    assert _sweep(config, tmp_path / "w", job)[0] == 2 and job.started == []
    err = capsys.readouterr().err.splitlines()
    assert err == ["mmjax.sweep: error: run a: flag --config.max_steps=ten: invalid literal for int() with base 10: "
                   "'ten'", "mmjax.sweep: error: run b: --config nope.py: no such config file"]


def test_the_launcher_logs_the_job_and_passes_a_signal_on_once(tmp_path):
    """SIGTERM to the sweep reaches its job once; the job saves and exits 75, and the sweep knows."""
    log = tmp_path / "run" / "log.txt"
    job = ("import signal, sys, time\n"
           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75))\n"
           "print('ready', flush=True)\ntime.sleep(60)\n")
    with runner.Subprocess() as launch:
        assert launch([sys.executable, "-c", "print('hello')"], str(log)) == 0 and not launch.stop_requested

        def signal_when_ready():
            while "ready" not in log.read_text().splitlines():  # the job's line, not the logged command
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=signal_when_ready, daemon=True).start()
        assert launch([sys.executable, "-c", job], str(log)) == 75
        assert launch.stop_requested
    text = log.read_text()
    assert text.count("==== mmjax.sweep") == 2 and "hello\n" in text and "ready\n" in text


# ---- sweep-wide overrides: --config.<key>=<value> on the sweep's command line ------------------

LR = "--config.optim.learning_rate=1e-06"


def test_split_argv_takes_the_overrides_out_and_keeps_the_sweep_file():
    argv = ["mmjax.sweep", "--config", "s.py:arg", "--config.optim.learning_rate=1e-6", "--workdir", "w",
            "--config.max_steps", "3", "--config=t.py", "--config.sample.allow_eos", "--dry_run",
            "--noconfig.data.system_prompt", "-config.seed=1", "--config.grpo.beta", "-0.5",
            "--config.report.published", "pism_vrt", "--only=a*", "--", "--config.after=1"]
    rest, overrides = cli.split_argv(argv)
    assert rest == ["mmjax.sweep", "--config", "s.py:arg", "--workdir", "w", "--config=t.py", "--dry_run",
                    "--only=a*", "--", "--config.after=1"]
    assert overrides == ["--config.optim.learning_rate=1e-6", "--config.max_steps=3", "--config.sample.allow_eos",
                         "--noconfig.data.system_prompt", "--config.seed=1", "--config.grpo.beta=-0.5",
                         "--config.report.published=pism_vrt"]
    # the value of --config is the sweep file, whatever it reads; a value may hold '=' and spaces
    assert cli.split_argv(["p", "--config", "--config.py", "--config.data.x", "a=b c"]) == (
        ["p", "--config", "--config.py"], ["--config.data.x=a=b c"])
    assert cli.split_argv(["p", "--config=s.py"]) == (["p", "--config=s.py"], [])


def test_a_sweep_wide_override_reaches_every_run_and_wins(tmp_path, capsys):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    code, _ = _sweep(config, w, job, overrides=[LR])
    assert code == 0 and job.started == list("abcdefg")
    for name, command in job.commands.items():
        assert command[-1] == LR and not any(f.startswith("--config.report") for f in command), name
        assert json.load(open(w / "runs" / name / "sweep_state.json"))["command"] == command
    d = job.commands["d"]  # its own optim.learning_rate=0.001 is left out: the sweep-wide value wins
    assert not any(f.startswith("--config.optim.learning_rate=0.001") for f in d)
    assert check.parse(config, d[d.index("--workdir") + 2:]).optim.learning_rate == 1e-6
    assert job.commands["b"][-2:] == [f"--config.init_from={w}/runs/a", LR]
    # the override is part of each run's command: a done run is not run again, but said so
    capsys.readouterr()
    job = FakeJob()
    assert _sweep(config, w, job)[0] == 0 and job.started == []
    assert capsys.readouterr().out.count("already done (by another command line") == 7
    # a tuple field: ml_collections appends repeated values, so the run's own is left out
    config = _sweep_file(tmp_path, '[Run("a", {"sample.allowed_tokens": ("A", "B")})]', "s2.py")
    job = FakeJob()
    assert _sweep(config, tmp_path / "w2", job, overrides=["--config.sample.allowed_tokens=('C',)"])[0] == 0
    a = job.commands["a"]
    assert check.parse(config, a[a.index("--workdir") + 2:]).sample.allowed_tokens == ("C",)


def test_a_mistyped_sweep_wide_override_is_named_before_any_run_starts(tmp_path, capsys):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    assert _sweep(config, w, job, overrides=["--config.optim.learning_rat=1e-6"])[0] == 2
    assert job.started == [] and not os.path.exists(w)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 7  # one per run, as a run's own override
    assert err[0].startswith("mmjax.sweep: error: run a: --config.optim.learning_rat: ")
    assert "did you mean config.optim.learning_rate" in err[0]
    assert _sweep(config, w, job, overrides=["--config.max_steps=ten"])[0] == 2 and job.started == []
    assert "--config.max_steps=ten: invalid literal for int()" in capsys.readouterr().err


def test_dry_run_and_slurm_scripts_carry_the_sweep_wide_override(tmp_path):
    config, w = _sweep_file(tmp_path, GRAPH), tmp_path / "w"
    job = FakeJob()
    code, out = _sweep(config, w, job, dry_run=True, overrides=[LR, "--config.max_steps=3"])
    assert code == 0 and job.started == [] and not os.path.exists(w)
    commands = [shlex.split(line) for line in out.splitlines()[1::2]]
    assert len(commands) == 7 and all(c[-2:] == [LR, "--config.max_steps=3"] for c in commands)
    assert "--config.max_steps=2" not in commands[0]  # run a's own max_steps: the sweep-wide one wins
    code, out = _sweep(config, w, job, emit="slurm", overrides=[LR])
    assert code == 0 and job.started == []
    srun = next(line for line in (w / "slurm" / "d.sbatch").read_text().splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-1] == LR and "0.001" not in srun


def test_the_cli_passes_sweep_wide_overrides_in_both_forms(tmp_path):
    config = _sweep_file(tmp_path, GRAPH)
    command = [sys.executable, "-m", "mmjax.sweep", "--config", config, "--config.optim.learning_rate", "1e-6",
               "--workdir", str(tmp_path / "w"), "--dry_run", "--config.max_steps=3"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line) for line in done.stdout.splitlines() if not line.startswith("#")]
    assert len(commands) == 7  # the value as it was typed
    assert all(c[-2:] == ["--config.optim.learning_rate=1e-6", "--config.max_steps=3"] for c in commands)
    bad = subprocess.run([*command, "--config.report.published=nope"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "pism_vrt" in bad.stderr and not bad.stdout


# The paradigm grid's shape, small: the base model's eval and one trained row and its eval.
GRID = '[Run("eval_base"), Run("grpo_midhard"), Run("eval_grpo_midhard", after="grpo_midhard")]'


class FakeEval(FakeJob):
    """A fake job that writes an eval run's results, as mmjax.jobs.eval does."""

    SCORES = {"eval_base": {"mathvista": 0.5, "mmstar": 0.6}, "eval_grpo_midhard": {"mathvista": 0.7, "mmstar": 0.5}}

    def __call__(self, command, log_path):
        rc = super().__call__(command, log_path)
        name = self.started[-1]
        if name in self.SCORES:
            results = {"benchmarks": {b: {"score": s, "n": 10, "metric": "accuracy", "format": "mc"}
                                      for b, s in self.SCORES[name].items()}}
            os.makedirs(os.path.join(os.path.dirname(log_path), "eval"))
            with open(os.path.join(os.path.dirname(log_path), "eval", "results.json"), "w") as f:
                json.dump(results, f)
        return rc


def test_report_published_goes_to_the_end_report_not_to_the_runs(tmp_path):
    config, w = _sweep_file(tmp_path, GRID), tmp_path / "w"
    job = FakeEval()
    code, out = _sweep(config, w, job, overrides=["--config.report.published=pism_vrt", "--config.max_steps=3"])
    assert code == 0 and job.started == ["eval_base", "grpo_midhard", "eval_grpo_midhard"]
    for command in job.commands.values():
        assert command[-1] == "--config.max_steps=3" and not any(f.startswith("--config.report") for f in command)
    assert f"`python -m mmjax.sweep report {w} --published pism_vrt` rebuilds it" in out
    written = json.load(open(w / "paradigms.json"))
    assert [r["name"] for r in written["rows"]] == ["base", "grpo_midhard"]
    assert written["rows"][1]["scores"] == {"mathvista": 70.0, "mmstar": 50.0, "mean": 60.0}
    assert written["published"]["table"] == "pism_vrt"
    assert [r["name"] for r in written["published"]["rows"]] == ["paper: grpo_full", "paper: grpo_midhard"]
    assert written["published"]["rows"][1]["scores"] == {"mathvista": 68.3, "mmstar": 63.9, "mean": 66.1}
    assert "| paper: grpo_midhard | 68.30 | 63.90 | 66.10 |" in (w / "paradigms.md").read_text()
    # without it, the report has no paper rows (and the runs' commands are the same: nothing runs again)
    job = FakeEval()
    assert _sweep(config, w, job, overrides=["--config.max_steps=3"])[0] == 0 and job.started == []
    assert json.load(open(w / "paradigms.json"))["published"] is None


def test_a_bad_report_option_exits_2_before_any_run_starts(tmp_path, capsys):
    config, w = _sweep_file(tmp_path, GRID), tmp_path / "w"
    job = FakeEval()
    assert _sweep(config, w, job, overrides=["--config.report.published=pism"])[0] == 2
    err = capsys.readouterr().err
    assert err.startswith("mmjax.sweep: error: --config.report.published=pism: no published table 'pism'")
    assert "cmab_vpt, cmab_vrt, pism_vpt, pism_vrt" in err
    for bad in ("--config.report.published", "--config.report.title=x", "--config.report=1",
                "--noconfig.report.published"):
        assert _sweep(config, w, job, overrides=[bad])[0] == 2, bad
        err = capsys.readouterr().err
        assert err.startswith(f"mmjax.sweep: error: {bad.split('=')[0]}") and "pism_vrt" in err, err
    # a sweep with no eval_base writes no report: the option has nothing to go to
    assert _sweep(_sweep_file(tmp_path, GRAPH, "s2.py"), w, job, overrides=["--config.report.published=pism_vrt"],
                  dry_run=True)[0] == 2
    assert "has no eval_base run" in capsys.readouterr().err
    assert job.started == [] and not os.path.exists(w)
