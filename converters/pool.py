"""Worker processes for the converters: they die with the converter, whatever kills it.

A ``ProcessPoolExecutor`` worker outlives a parent killed with SIGKILL (no cleanup runs)
and keeps converting into a folder nobody reads. Each worker asks Linux to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and checks at once that the
parent is still the one that started it (it may have died before the request).
Elsewhere a thread polls :func:`os.getppid`.

A worker killed while the pool runs (the out-of-memory killer, say) breaks the whole
pool: every job not finished then fails with ``BrokenProcessPool``. :func:`imap_pool`
raises :class:`WorkerPoolBroken` instead, once the finished jobs are yielded, with a
message that names the likely cause and the fix.
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

__all__ = ["WorkerPoolBroken", "broken_pool_message", "die_with_parent", "imap_pool"]

_PR_SET_PDEATHSIG = 1


class WorkerPoolBroken(RuntimeError):
    """A worker process died (killed, most likely out of memory): the pool cannot go on.

    The message says so and what to do. ``unfinished`` holds the jobs that were not done;
    the jobs yielded before it was raised were.
    """

    def __init__(self, message: str, unfinished: Sequence[Any] = ()):
        super().__init__(message)
        self.unfinished = list(unfinished)


def _how_workers_ended(processes: Sequence[Any]) -> str:
    """``"; process 123 ended by SIGKILL"``: the workers that died of a signal other than our SIGTERM."""
    ended = []
    for proc in processes:
        code = getattr(proc, "exitcode", None)
        if code is None or code == -signal.SIGTERM:  # SIGTERM: the pool stopping the survivors
            continue
        try:
            how = signal.Signals(-code).name if code < 0 else f"exit code {code}"
        except ValueError:
            how = f"signal {-code}"
        ended.append(f"process {proc.pid} ended by {how}")
    return f"; {', '.join(ended)}" if ended else ""


def broken_pool_message(n_unfinished: int, n_jobs: int, workers: int, detail: str = "") -> str:
    """What a converter says when a worker was killed: the likely cause and the fix.

    >>> broken_pool_message(3, 5, 4)[:59]
    'a worker process was killed while converting (3 of 5 items '
    """
    return (f"a worker process was killed while converting ({n_unfinished} of {n_jobs} items not done{detail}): "
            "most likely by the out-of-memory killer, as each worker holds about one item (a crop or image) in "
            f"memory. Run the same command again with fewer --workers than {workers} (e.g. --workers 1): the "
            "finished items are kept and resumed")


def _exit_if_orphan(parent: int) -> None:
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _poll_parent(parent: int, every: float = 1.0) -> None:
    while True:
        _exit_if_orphan(parent)
        time.sleep(every)


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this process when process ``parent`` ends.

    Parameters
    ----------
    parent : int
        The pid of the process that started the pool (``os.getpid()`` there).
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    _exit_if_orphan(parent)
    if not armed:
        threading.Thread(target=_poll_parent, args=(parent,), daemon=True).start()


def imap_pool(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int,
              fatal: tuple[type[BaseException], ...] = ()) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(job)`` for every job in ``workers`` spawned processes; yield as they finish.

    Yields ``(job, result, None)``, or ``(job, None, exc)`` when the job raised. An
    exception of a ``fatal`` type cancels the jobs not started and is raised (a full disk
    is not one bad crop).

    Raises
    ------
    WorkerPoolBroken
        When a worker process died (killed by a signal: the out-of-memory killer, say), after
        every job that did finish was yielded; the others are in its ``unfinished``.
    """
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        # the spawn context starts every worker at the first submit: keep them to say how one ended
        processes = list((getattr(pool, "_processes", None) or {}).values())
        lost = []
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield futures[fut], fut.result(), None
                except fatal:
                    raise
                except BrokenProcessPool:  # not this job's fault: every unfinished job gets it
                    lost.append(futures[fut])
                except Exception as exc:  # noqa: BLE001 - a job's error, reported per job
                    yield futures[fut], None, exc
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        if lost:
            pool.shutdown(wait=True)  # the pool's own thread joins the workers: their exit codes are then known
            raise WorkerPoolBroken(broken_pool_message(len(lost), len(jobs), workers, _how_workers_ended(processes)),
                                   lost)
