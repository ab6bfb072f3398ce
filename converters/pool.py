"""Worker processes for the converters: they die with the converter, whatever kills it.

A ``ProcessPoolExecutor`` worker outlives a parent killed with SIGKILL (no cleanup runs)
and keeps converting into a folder nobody reads. Each worker asks Linux to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and checks at once that the
parent is still the one that started it (it may have died before the request).
Elsewhere a thread polls :func:`os.getppid`.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

__all__ = ["die_with_parent", "imap_pool"]

_PR_SET_PDEATHSIG = 1


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

    Yields ``(job, result, None)``, or ``(job, None, exc)`` when the job raised or its
    worker died. An exception of a ``fatal`` type cancels the jobs not started and is
    raised (a full disk is not one bad crop).
    """
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield futures[fut], fut.result(), None
                except fatal:
                    raise
                except Exception as exc:  # noqa: BLE001 - a job's error or a dead worker, reported per job
                    yield futures[fut], None, exc
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
