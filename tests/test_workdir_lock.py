"""One run per workdir (mmjax.jobs.workdir_lock): a second run is refused naming the owner, a
stale lock is taken over with a warning, and two real CLI runs on one workdir do not mix."""

import json
import logging
import os
import subprocess
import sys
import time

import ml_collections
import nothing_built
import pytest

from mmjax.jobs import workdir_lock as wl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_SUCH_PID = 2**22 + 1  # above the largest pid_max Linux allows: never a live process


def _lock_path(workdir) -> str:
    return os.path.join(workdir, wl.LOCK_NAME)


def _write_owner(workdir, **fields) -> dict:
    """A lock file as another run would have left it: this process's details, then `fields`."""
    owner = {**wl.describe_this_process("grpo", ["mmjax.main", "--other"]), **fields}
    with open(_lock_path(workdir), "w") as f:
        json.dump(owner, f)
    return owner


def _read_lock(workdir) -> dict:
    with open(_lock_path(workdir)) as f:
        return json.load(f)


def test_the_lock_file_names_this_process_and_is_removed_on_release(tmp_path):
    with wl.acquire(str(tmp_path), mode="sft", argv=["mmjax.main", "--x"]) as lock:
        content = _read_lock(tmp_path)
        assert content["pid"] == os.getpid() and content["host"] == wl.socket.gethostname()
        assert content["pid_start_ticks"] == wl.process_start_ticks(os.getpid()) is not None
        assert content["mode"] == "sft" and content["argv"] == ["mmjax.main", "--x"]
        assert content["started"][:4].isdigit() and "T" in content["started"]  # ISO time
        assert content["token"] == lock.content["token"]
        assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # the temporary file is gone
    assert not os.path.exists(_lock_path(tmp_path))


def test_released_on_an_exception(tmp_path):
    with pytest.raises(KeyError):
        with wl.acquire(str(tmp_path)):
            raise KeyError("the job failed")
    assert not os.path.exists(_lock_path(tmp_path))


def test_a_second_acquire_is_refused_naming_the_owner(tmp_path):
    with wl.acquire(str(tmp_path), mode="grpo") as first:
        with pytest.raises(wl.WorkdirLocked) as err:
            wl.acquire(str(tmp_path), force=True)  # force does not take a lock whose process is alive here
        message = str(err.value)
        assert "\n" not in message
        assert f"pid {os.getpid()}" in message and wl.socket.gethostname() in message
        assert first.content["started"] in message and "mode grpo" in message
        assert "still running on this host" in message and "another --workdir" in message
        assert _read_lock(tmp_path)["token"] == first.content["token"]  # untouched


def test_a_lock_whose_pid_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
    _write_owner(tmp_path, pid=NO_SUCH_PID)
    with caplog.at_level(logging.WARNING, logger=wl.__name__):
        with wl.acquire(str(tmp_path)) as lock:
            assert _read_lock(tmp_path)["token"] == lock.content["token"]
    assert f"pid {NO_SUCH_PID} is no longer running" in caplog.text and "taking over" in caplog.text


def test_a_killed_run_not_yet_reaped_is_gone(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_owner(tmp_path, pid=proc.pid, pid_start_ticks=wl.process_start_ticks(proc.pid))
        with pytest.raises(wl.WorkdirLocked, match=f"pid {proc.pid} "):
            wl.acquire(str(tmp_path))  # alive
        proc.kill()
        deadline = time.monotonic() + 30
        while wl._proc_stat(proc.pid)[0] != "Z":  # killed, not waited for: a zombie with its pid
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with caplog.at_level(logging.WARNING, logger=wl.__name__):
            with wl.acquire(str(tmp_path)):
                pass
        assert f"pid {proc.pid} is no longer running" in caplog.text
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_with_another_start_time_is_taken_over(tmp_path, caplog):
    # The pid is alive (it is ours) but its process started at another time than the owner's.
    _write_owner(tmp_path, pid=os.getpid(), pid_start_ticks=wl.process_start_ticks(os.getpid()) - 1)
    with caplog.at_level(logging.WARNING, logger=wl.__name__):
        with wl.acquire(str(tmp_path)) as lock:
            assert _read_lock(tmp_path)["token"] == lock.content["token"]
    assert "now belongs to another process" in caplog.text


def test_a_lock_from_before_a_reboot_is_taken_over(tmp_path, caplog):
    _write_owner(tmp_path, boot_id="00000000-0000-0000-0000-000000000000")
    with caplog.at_level(logging.WARNING, logger=wl.__name__):
        with wl.acquire(str(tmp_path)):
            pass
    assert "rebooted" in caplog.text


def test_a_lock_from_another_host_is_refused_and_force_takes_it(tmp_path, caplog):
    owner = _write_owner(tmp_path, host="other-host.example", pid=NO_SUCH_PID)  # its pid means nothing here
    with pytest.raises(wl.WorkdirLocked) as err:
        wl.acquire(str(tmp_path))
    message = str(err.value)
    assert f"pid {NO_SUCH_PID} on host other-host.example, started {owner['started']}" in message
    assert "--config.force_unlock=True" in message and "\n" not in message
    assert _read_lock(tmp_path)["token"] == owner["token"]
    with caplog.at_level(logging.WARNING, logger=wl.__name__):
        with wl.acquire(str(tmp_path), force=True) as lock:
            assert _read_lock(tmp_path)["token"] == lock.content["token"]
    assert "force_unlock" in caplog.text and "other-host.example" in caplog.text


def test_a_lock_file_that_is_not_json_is_refused_unless_forced(tmp_path):
    with open(_lock_path(tmp_path), "w") as f:
        f.write("not json")
    with pytest.raises(wl.WorkdirLocked, match="not an mmjax lock.*force_unlock"):
        wl.acquire(str(tmp_path))
    with wl.acquire(str(tmp_path), force=True):
        assert _read_lock(tmp_path)["pid"] == os.getpid()


def test_release_leaves_a_successors_lock_alone(tmp_path):
    lock = wl.acquire(str(tmp_path))
    successor = _write_owner(tmp_path, host="other-host.example")  # took it over, e.g. with force_unlock
    lock.release()
    assert _read_lock(tmp_path) == successor


def test_only_process_0_takes_the_lock(tmp_path):
    config = ml_collections.ConfigDict({"mode": "grpo", "force_unlock": False})
    other = _write_owner(tmp_path, host="other-host.example")
    with wl.hold(str(tmp_path), config, process_index=1):  # would be refused as process 0
        assert _read_lock(tmp_path) == other
    os.remove(_lock_path(tmp_path))
    with wl.hold(str(tmp_path), config, process_index=0):
        assert _read_lock(tmp_path)["pid"] == os.getpid()
    assert not os.path.exists(_lock_path(tmp_path))


def test_process_start_ticks_reads_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    # The command name (field 2 of /proc/<pid>/stat) is the name of the file the process runs.
    odd = tmp_path / "a b) c"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        with open(f"/proc/{proc.pid}/stat") as f:
            assert "(a b) c)" in f.read()
        ticks = wl.process_start_ticks(proc.pid)
        assert isinstance(ticks, int) and ticks >= wl.process_start_ticks(os.getpid())
    finally:
        proc.kill()
        proc.wait()
    assert wl.process_start_ticks(NO_SUCH_PID) is None


_CONTENDER = """
import os, sys, time
from mmjax.jobs import workdir_lock as wl
workdir, go = sys.argv[1], float(sys.argv[2])
while time.time() < go:  # start together, to race
    time.sleep(0.001)
try:
    with wl.acquire(workdir):
        print("won", flush=True)
        while not os.path.exists(os.path.join(workdir, "done")):  # hold it until every contender has tried
            time.sleep(0.01)
except wl.WorkdirLocked as e:
    print("refused", e, flush=True)
"""


def test_of_several_processes_racing_for_a_stale_lock_exactly_one_wins(tmp_path):
    _write_owner(tmp_path, pid=NO_SUCH_PID)
    go = time.time() + 2
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(tmp_path), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        outcomes = [(p.stdout.readline().split() or ["no answer"])[0] for p in procs]
        (tmp_path / "done").touch()
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert sorted(outcomes) == ["refused"] * 5 + ["won"], outcomes
    assert not os.path.exists(_lock_path(tmp_path))


# ---- two real runs on one workdir ------------------------------------------------------------

ARGS = ["--config", "configs/demo.py", "--config.mode=grpo", "--config.max_steps=3", "--config.save_steps=1",
        "--config.data.batch_size=4", "--config.grpo.num_generations=4"]


@pytest.mark.slow  # one 3-step GRPO run: 30-90 s on 2 shared cores, most of it compiling
def test_a_second_run_on_a_busy_workdir_exits_2_naming_the_owner(tmp_path):
    workdir = tmp_path / "w"
    command = [sys.executable, "-m", "mmjax.main", *ARGS, "--workdir", str(workdir)]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(_lock_path(workdir)):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the first run took no lock"
            time.sleep(0.05)
        # refused before anything is built: a build would exit 1 (tests/nothing_built.py)
        second = subprocess.run(nothing_built.command(*command[3:]), cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert first.poll() is None, "the first run ended before the second one was refused: make it longer"
        assert second.returncode == 2, second.stderr[-3000:]
        assert "Traceback" not in second.stderr, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("mmjax.main: error: "), second.stderr
        assert f"pid {first.pid} on host {wl.socket.gethostname()}" in lines[0], lines[0]
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    with open(workdir / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f if line.strip()] == [1, 2, 3]
    assert not os.path.exists(_lock_path(workdir))  # released at the end
