"""One run per workdir: the lock file `<workdir>/.mmjax.lock` that `mmjax.main` holds while a job runs.

Two runs writing one workdir corrupt each other (both save the same checkpoint steps and
append to the same metrics file), so a run takes this lock first and a second run is refused
with one line naming the owner. The file is JSON: host, pid, the pid's start time in clock
ticks since boot (/proc/<pid>/stat field 22) and the boot id, so that a pid the kernel has
since given to another process is not mistaken for the owner, plus when and how the run was
started and a random token that tells an owner its own file from a successor's.

A lock is stale, and is taken over with a warning, when its owner ran on this host and that
process is gone: the pid does not exist, it started at another time, or the host has rebooted
since. Whether a process on another host is alive cannot be told from here, so such a lock is
refused unless `--config.force_unlock=True` says that run is gone.

Creation is atomic: the content is written to a temporary file that is then hard-linked to
the lock's name, which fails if the name exists (atomic on local filesystems and over NFS,
unlike O_EXCL on old NFS clients), so a reader never sees a half-written lock. Reading,
judging and replacing a stale lock happen under flock() of `<workdir>/.mmjax.lock.guard`, so
two runs cannot both take over the same stale lock; where the filesystem has no flock the
guard is skipped and only that race remains.

With several JAX processes in one job only process 0 takes the lock: they share the workdir
by design.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
import uuid

log = logging.getLogger(__name__)

LOCK_NAME = ".mmjax.lock"
GUARD_NAME = ".mmjax.lock.guard"
_TRIES = 5  # a lock released between our failed create and our read: try again


class WorkdirLocked(RuntimeError):
    """Another run holds the workdir; the message is one line naming it and the way out."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/<pid>/stat (None: no /proc or no such process).

    They are split after the last ')' because the command name in field 2 may itself hold
    spaces and parentheses.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat; None if unknown)."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except (OverflowError, ValueError):
        return False
    # A killed run its launcher has not reaped yet is a zombie: it still has its pid, but is gone.
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))


def describe_this_process(mode: str = "", argv: list[str] | None = None) -> dict:
    """The lock content for this process."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start_ticks": process_start_ticks(pid),
        "boot_id": boot_id(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": mode,
        "argv": list(sys.argv if argv is None else argv),
        "token": uuid.uuid4().hex,
    }


def stale_reason(owner: dict) -> str | None:
    """Why a lock held on this host is stale (its process is gone), or None if it is alive.

    Only meaningful for a owner whose host is this one.
    """
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return f"its pid {pid!r} is not a process id"
    mine = boot_id()
    if owner.get("boot_id") and mine and owner["boot_id"] != mine:
        return "this host has rebooted since it was taken"
    if not pid_alive(pid):
        return f"pid {pid} is no longer running"
    ticks, now = owner.get("pid_start_ticks"), process_start_ticks(pid)
    if ticks is not None and now is not None and ticks != now:
        return f"pid {pid} now belongs to another process (it started at another time)"
    return None


def _owner_text(owner: dict) -> str:
    mode = f", mode {owner['mode']}" if owner.get("mode") else ""
    return f"pid {owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')}{mode}"


class WorkdirLock:
    """The lock this process holds; a context manager that releases it on exit, exceptions included."""

    def __init__(self, workdir: str, content: dict):
        self.workdir, self.content = workdir, content
        self.path = os.path.join(workdir, LOCK_NAME)
        self._held = True

    def release(self) -> None:
        """Remove the lock file if it is still ours (a run that took it over keeps its own)."""
        # A forked child (e.g. a data worker) inherits this object: the lock is its parent's.
        if not self._held or os.getpid() != self.content["pid"]:
            return
        self._held = False
        try:
            with _guard(self.workdir):
                owner = _read(self.path)
                if isinstance(owner, dict) and owner.get("token") == self.content["token"]:
                    os.unlink(self.path)
                elif owner is not None:
                    log.warning("%s is no longer this run's lock (now %s); left as it is", self.path,
                                _owner_text(owner) if isinstance(owner, dict) else "unreadable")
        except OSError as e:  # the workdir was removed or unmounted under us: nothing left to release
            log.warning("could not release %s: %s", self.path, e)

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(workdir: str, *, force: bool = False, mode: str = "", argv: list[str] | None = None) -> WorkdirLock:
    """Take `workdir`'s lock, taking over a stale one (and, with `force`, one from another host).

    Raises WorkdirLocked naming the owner when another run has it. The workdir must exist.
    """
    path = os.path.join(workdir, LOCK_NAME)
    content = describe_this_process(mode, argv)
    with _guard(workdir):
        for _ in range(_TRIES):
            if _create(path, content):
                return WorkdirLock(workdir, content)
            owner = _read(path)
            if owner is None:
                continue  # released just now
            reason = _takeover_reason(owner, content["host"], force, path, workdir)
            log.warning("taking over the lock %s of %s: %s", path,
                        _owner_text(owner) if isinstance(owner, dict) else "unknown", reason)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    raise WorkdirLocked(f"could not take the lock {path}: it kept reappearing ({_TRIES} tries)")


def _takeover_reason(owner, host: str, force: bool, path: str, workdir: str) -> str:
    """Why the lock `owner` may be taken over, or raise WorkdirLocked saying why not."""
    if not isinstance(owner, dict):
        if force:
            return "it is unreadable and config.force_unlock=True"
        raise WorkdirLocked(f"workdir {workdir} has a lock file {path} that is not an mmjax lock (not JSON); if no "
                            "run uses this workdir, pass --config.force_unlock=True or delete that file")
    if owner.get("host") != host:
        if force:
            return f"config.force_unlock=True (it was taken on host {owner.get('host')})"
        raise WorkdirLocked(f"workdir {workdir} is in use by {_owner_text(owner)} (lock file {path}); this host "
                            f"({host}) cannot tell whether that run is still alive: wait for it to end, use another "
                            "--workdir, or, if it is gone, pass --config.force_unlock=True")
    reason = stale_reason(owner)
    if reason is None:  # alive on this host: force would let two runs write one workdir
        raise WorkdirLocked(f"workdir {workdir} is in use by {_owner_text(owner)} (lock file {path}), which is "
                            f"still running on this host: wait for it to end, stop it (kill {owner.get('pid')}), "
                            "or use another --workdir")
    return reason


def _create(path: str, content: dict) -> bool:
    """Create the lock file with `content`, atomically; False if it exists."""
    tmp = f"{path}.{content['token']}.tmp"
    with open(tmp, "w") as f:
        json.dump(content, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            # NFS may report a link that did succeed as failed when its reply was lost.
            return os.stat(tmp).st_nlink == 2
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        # No hard links on this filesystem: O_EXCL; a reader may see it half written (see _read).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read(path: str, wait_s: float = 1.0):
    """The lock's content: a dict, None if there is no lock, or the raw text if it is not JSON
    (after waiting `wait_s` for a writer without hard links to finish)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            content = json.loads(text)
            if isinstance(content, dict):
                return content
        except json.JSONDecodeError:
            pass
        if time.monotonic() >= deadline:
            return text
        time.sleep(0.05)


@contextlib.contextmanager
def _guard(workdir: str):
    """flock() on the guard file while the lock file is read and changed (skipped where unsupported)."""
    fd = os.open(os.path.join(workdir, GUARD_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on an NFS mount without a lock manager
            log.debug("no flock on %s (%s): the lock's takeover is unguarded", workdir, e)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def hold(workdir: str, config, process_index: int = 0):
    """The lock for a job on `workdir` (a context manager); for JAX processes other than 0, a no-op.

    Raises WorkdirLocked when another run holds it.
    """
    if process_index != 0:  # the processes of one job share its workdir; process 0 speaks for them
        return contextlib.nullcontext()
    return acquire(workdir, force=bool(config.get("force_unlock", False)), mode=str(config.get("mode", "")))
