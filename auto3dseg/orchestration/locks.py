"""One run at a time per bundle and per work_dir step, and cleaning what a killed run left.

A lock is ``fcntl.flock`` on a small file (``<bundle>/.train.lock``, ``<work_dir>/.analyze.lock``,
``<ensemble_output>/.ensemble.lock``, ...). The kernel releases it when the holder dies, however
it dies (``kill -9`` included), so a lock of a dead process is never in the way: the next run
takes it and says that the previous holder ended without releasing it. The file also records
the holder (pid, host, start time, command) for the message a second run gets:

    error: <work>/segresnet_0 is being trained by another run: pid 4242 on node7, started
    2025-01-01 10:00:00: run_auto3dseg.py --mode train ... Wait for it to finish (or stop it), ...

A run refuses at once by default; ``AUTO3DSEG_LOCK_WAIT`` (seconds, ``inf`` for ever;
``run_auto3dseg.py --wait_lock``) makes it wait instead.

The training subprocess that ``--mode train`` launches (and each torchrun rank) does not take
the bundle lock again: it inherits the open lock file and the holder's token
(``AUTO3DSEG_LOCK_TOKENS``), so only one logical run holds a bundle. The launched process is
recorded in the file as a child of the holder (``children``), and it dies with its parent
(:mod:`auto3dseg.orchestration.lifetime`). Should one outlive it anyway, a second run is told that
the recorded holder is dead and which live process holds the lock (a recorded child, else a
process of this node that has the file open), so that it can be stopped. Run directly (MONAI's
``BundleAlgo.train``, by hand), rank 0 of the training takes the lock itself.

On a shared file system ``flock`` works across nodes only where the file system supports it
(NFSv4, Lustre mounted with ``flock``, GPFS); elsewhere it guards one node.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

__all__ = ["TOKENS_ENV", "WAIT_ENV", "Lock", "LockBusy", "bundle_lock", "clean_temporaries", "held_by_parent",
           "live_holders", "pid_alive", "processes_with_open", "step_lock"]

#: seconds a busy lock is waited for (``inf``: for ever); unset or 0: refuse at once
WAIT_ENV = "AUTO3DSEG_LOCK_WAIT"
#: tokens of the locks held by this process's parents, separated by ``,``
TOKENS_ENV = "AUTO3DSEG_LOCK_TOKENS"
#: prefixes of the pipeline's own temporaries (``.tmp-<pid>-<name>``, ``.old-<pid>-<name>``)
TEMP_PREFIXES = (".tmp-", ".old-")


class LockBusy(RuntimeError):
    """Another live run holds the lock; the message names it and says what to do."""

    user_message = True


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that recorded nothing (an older version?)"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command')}")


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` of this node running (not gone, not a zombie)?"""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def processes_with_open(path: str | os.PathLike) -> list[int]:
    """Processes of this node (other than this one) that have ``path`` open (Linux ``/proc``)."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                s = os.stat(f"/proc/{d}/fd/{fd}")
            except OSError:
                continue
            if (s.st_ino, s.st_dev) == (st.st_ino, st.st_dev):
                out.append(int(d))
                break
    return out


def live_holders(path: Path, holder: dict) -> tuple[bool | None, list[str]]:
    """(is the recorded holder alive: None when it runs on another node, the live processes that
    hold the lock for it: its recorded children, else processes here that have the file open)."""
    if not holder or holder.get("host") != socket.gethostname():
        return None, []
    alive = pid_alive(int(holder.get("pid") or 0)) if holder.get("pid") else False
    kids = [c for c in holder.get("children") or [] if c.get("pid") and pid_alive(int(c["pid"]))]
    named = [f"pid {c['pid']} ({c.get('command') or _cmdline(int(c['pid']))})" for c in kids]
    if not alive and not named:
        named = [f"pid {p} ({_cmdline(p)})" for p in processes_with_open(path) if pid_alive(p)]
    return alive, named


def _add_child(path: Path, pid: int, command: str, fd: int | None = None) -> None:
    """Record ``pid`` as a process working under the holder of ``path`` (best effort)."""
    own = fd is None
    try:
        if own:
            fd = os.open(path, os.O_RDWR)
        holder = json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
        kids = [c for c in holder.get("children") or [] if c.get("pid") != pid]
        holder["children"] = [*kids, {"pid": pid, "command": command}]
        data = json.dumps(holder).encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except (OSError, ValueError):
        pass
    finally:
        if own and fd is not None:
            os.close(fd)


def _wait_seconds(wait: float | None) -> float:
    if wait is not None:
        return float(wait)
    text = os.environ.get(WAIT_ENV, "").strip().lower()
    if text in ("", "0", "no", "false"):
        return 0.0
    return math.inf if text in ("inf", "yes", "true", "forever") else float(text)


class Lock:
    """An exclusive ``flock`` on ``path`` for the run doing ``what``; a context manager.

    Parameters
    ----------
    path : path
        The lock file (created; never deleted, so that every run locks the same inode).
    what : str
        What the holder does, for messages (``"training of <bundle>"``).
    wait : float, optional
        Seconds to wait for a busy lock (default: ``AUTO3DSEG_LOCK_WAIT``, else 0: refuse).

    Examples
    --------
    >>> with Lock("/tmp/x.lock", "an example") as lk:  # doctest: +SKIP
    ...     lk.token
    """

    def __init__(self, path: str | os.PathLike, what: str, wait: float | None = None, log=print):
        self.path, self.what, self.wait, self.log = Path(path), what, wait, log
        self.fd: int | None = None
        self.token = uuid.uuid4().hex
        self.inherited = False

    def acquire(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + _wait_seconds(self.wait)
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(self.path)
                if holder.get("token") and holder["token"] in held_by_parent():
                    os.close(fd)  # our parent run holds it for us
                    self.inherited = True
                    _add_child(self.path, os.getpid(), " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
                    return self
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusy(self._busy_message(holder)) from None
                if not told:
                    self.log(f"waiting for the {self.what}: held by {_describe(holder)}")
                    told = True
                time.sleep(1.0)
        stale = _read_holder(self.path)
        if stale:
            # the holder's own command, not self.what: tune_postprocess also takes the oof step's lock
            self.log(f"note: the lock {self.path} was held by a run that ended without finishing "
                     f"({_describe(stale)}); it was stale and is taken over")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "token": self.token}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as exc:  # a full disk: name the file (os.pwrite's error names none)
            os.close(fd)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
        self.fd = fd
        return self

    def _busy_message(self, holder: dict) -> str:
        alive, named = live_holders(self.path, holder)
        if alive is False and named:
            return (f"{self.path.parent} is busy: the {self.what} started by {_describe(holder)} is still running in "
                    f"{'; '.join(named)}, although that pid is dead (killed without stopping it). Wait for it to "
                    f"finish, or stop it (kill {' '.join(n.split()[1] for n in named)}), then run this command again")
        if alive is False:
            return (f"{self.path.parent} is busy: its lock {self.path} is held, but the recorded holder "
                    f"({_describe(holder)}) is dead and no process of this node has the file open: another node "
                    f"holds it through the shared file system, or the holder is exiting. Run this command again in "
                    f"a minute (or pass --wait_lock); if it persists, find the holder with: fuser -v {self.path}")
        if named:
            return (f"{self.path.parent} is busy: the {self.what} is running in another process ({_describe(holder)}; "
                    f"working in {'; '.join(named)}). Wait for it to finish (or stop it) and run this command again, "
                    f"or pass --wait_lock to wait")
        return (f"{self.path.parent} is busy: the {self.what} is running in another process ({_describe(holder)}). "
                f"Wait for it to finish (or stop it) and run this command again, or pass --wait_lock to wait; "
                f"if that process is gone, its lock ({self.path}) is released with it and a re-run proceeds")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # a clean end leaves no holder behind
        finally:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def note_child(self, pid: int, command: str) -> None:
        """Record ``pid`` (``command``) in the lock file as a process working under this lock."""
        if self.fd is not None:
            _add_child(self.path, pid, command, self.fd)

    def child_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` plus this lock's token, for a child process that works under it."""
        tokens = [t for t in env.get(TOKENS_ENV, "").split(",") if t]
        return {**env, TOKENS_ENV: ",".join([*tokens, self.token])}

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def held_by_parent() -> set[str]:
    """Tokens of the locks this process's parent runs hold for it."""
    return {t for t in os.environ.get(TOKENS_ENV, "").split(",") if t}


def bundle_lock(bundle: str | os.PathLike, wait: float | None = None, log=print) -> Lock:
    """The lock of training one bundle (``<bundle>/.train.lock``)."""
    bundle = Path(bundle)
    return Lock(bundle / ".train.lock", f"training of {bundle.name}", wait, log)


#: what runs a step whose lock is not named after a --mode
_STEP_RUNS = {"cv": "cross-validated scoring (--mode oof, tune_postprocess or full)", "tune": "--mode tune_postprocess"}


def step_lock(folder: str | os.PathLike, step: str, wait: float | None = None, log=print) -> Lock:
    """The lock of a work_dir step (analyze, generate, ensemble, submit): ``<folder>/.<step>.lock``."""
    return Lock(Path(folder) / f".{step}.lock", f"{_STEP_RUNS.get(step, f'--mode {step}')} of {folder}", wait, log)


def busy_message(folder: str | os.PathLike, step: str, what: str | None = None) -> str | None:
    """Why ``step``'s lock of ``folder`` is held by a running process (as :class:`LockBusy` would
    say it, the step called ``what``), else None. Only looks: a stale holder's record is left for
    that step's next run."""
    path = Path(folder) / f".{step}.lock"
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return Lock(path, what or f"--mode {step} of {folder}")._busy_message(_read_holder(path))
    finally:
        os.close(fd)  # closing drops the shared lock taken to look
    return None


def wait_while_busy(folder: str | os.PathLike, step: str, wait: float | None = None, log=print,
                    poll: float = 2.0, what: str | None = None) -> str | None:
    """:func:`busy_message`, after waiting up to ``wait`` seconds (default ``AUTO3DSEG_LOCK_WAIT``,
    ``--wait_lock``) for ``step`` of ``folder`` (called ``what``) to end: None once it is free."""
    limit = _wait_seconds(wait)
    start = time.monotonic()
    message = busy_message(folder, step, what)
    if message and limit > 0:
        log(f"waiting for {what or f'--mode {step} of {folder}'} to end (--wait_lock): {message.split('. ')[0]}")
    while message and time.monotonic() - start < limit:
        time.sleep(min(poll, max(0.0, limit - (time.monotonic() - start))))
        message = busy_message(folder, step, what)
    return message


def clean_temporaries(folder: str | os.PathLike, names: tuple[str, ...] = ()) -> list[Path]:
    """Remove the pipeline's own temporaries a killed run left in ``folder`` (not recursive):
    ``.tmp-<pid>-*`` and ``.old-<pid>-*``, only those ending in one of ``names`` when given.
    Call it while holding the lock of the step that writes there."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.name.startswith(TEMP_PREFIXES) or (names and not p.name.endswith(names)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
